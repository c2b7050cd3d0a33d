//! Kazoo's `kazoo_convert` command keys as overrides: an operator's shell command
//! (`convert_pdf_command`, `convert_image_command`, …) runs in the same sandbox with `$FROM`,
//! `$TO` and `$WORKDIR` set as Kazoo sets them; success is exit status 0 and a non-empty `$TO`.

use std::process::Command;

use super::ConvertConfig;
use super::error::ConvertError;
use super::sandbox::{self, WorkDir};

/// Runs `command` on `input` (written as `from.<from_ext>`) and returns what it wrote to
/// `$TO` (`to.<to_ext>`).
pub fn run_override(
    cfg: &ConvertConfig,
    command: &str,
    input: &[u8],
    from_ext: &str,
    to_ext: &str,
) -> Result<Vec<u8>, ConvertError> {
    let wd = WorkDir::new((!cfg.work_dir.is_empty()).then(|| std::path::Path::new(&cfg.work_dir)))?;
    let from = wd.join(&format!("from.{from_ext}"));
    let to = wd.join(&format!("to.{to_ext}"));
    std::fs::write(&from, input)?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    let env = [
        ("FROM", from.as_path()),
        ("TO", to.as_path()),
        ("WORKDIR", wd.path()),
    ];
    let out = sandbox::run_env("convert command", cmd, &env, &cfg.limits(), wd.path())?;
    if !out.status.success() {
        return Err(ConvertError::ToolFailed {
            tool: "convert command".into(),
            detail: format!(
                "{}: {}",
                out.status,
                out.stderr.lines().last().unwrap_or("")
            ),
        });
    }
    let data = std::fs::read(&to).unwrap_or_default();
    if data.is_empty() {
        return Err(ConvertError::ToolFailed {
            tool: "convert command".into(),
            detail: "it wrote nothing to $TO".into(),
        });
    }
    Ok(data)
}

/// Runs a `validate_*_command` on `file` (as `$FILE`); exit status 0 means valid.
pub fn run_validate(
    cfg: &ConvertConfig,
    command: &str,
    file: &[u8],
    ext: &str,
) -> Result<(), ConvertError> {
    let wd = WorkDir::new((!cfg.work_dir.is_empty()).then(|| std::path::Path::new(&cfg.work_dir)))?;
    let path = wd.join(&format!("file.{ext}"));
    std::fs::write(&path, file)?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    let env = [("FILE", path.as_path()), ("WORKDIR", wd.path())];
    let out = sandbox::run_env("validate command", cmd, &env, &cfg.limits(), wd.path())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ConvertError::Invalid(format!(
            "validate command failed ({})",
            out.status
        )))
    }
}
