//! Closed vocabularies of the fax data model, serialised to Kazoo's strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `pvt_job_status` of an outbound fax document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Document is being stored/converted; not runnable yet. Kazoo's SMTP path wrote
    /// `"attaching files"` (with a space); that spelling is read as this status.
    #[serde(alias = "attaching files")]
    AttachingFiles,
    /// A resubmitted/forwarded copy being prepared.
    Resubmitting,
    /// Waiting for its due time and a free slot.
    Pending,
    /// Taken by its account's job queue, about to be handed to a worker.
    Locked,
    /// A worker is transmitting it.
    Processing,
    Completed,
    Failed,
    /// Cancelled by the user before it was sent (faxd addition).
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::AttachingFiles,
        JobStatus::Resubmitting,
        JobStatus::Pending,
        JobStatus::Locked,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::AttachingFiles => "attaching_files",
            JobStatus::Resubmitting => "resubmitting",
            JobStatus::Pending => "pending",
            JobStatus::Locked => "locked",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Final states: the document leaves the queue.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "attaching files" {
            return Ok(JobStatus::AttachingFiles);
        }
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job status '{s}'"))
    }
}

/// The folder of a fax in an account MODB. A missing folder means `inbox`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Folder {
    Inbox,
    Outbox,
}

impl Folder {
    pub fn as_str(self) -> &'static str {
        match self {
            Folder::Inbox => "inbox",
            Folder::Outbox => "outbox",
        }
    }
}

impl fmt::Display for Folder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Folder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "inbox" => Ok(Folder::Inbox),
            "outbox" => Ok(Folder::Outbox),
            _ => Err(format!("unknown folder '{s}'")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_use_kazoo_strings() {
        for st in JobStatus::ALL {
            assert_eq!(st.as_str().parse::<JobStatus>().unwrap(), st);
            assert_eq!(
                serde_json::to_value(st).unwrap(),
                serde_json::json!(st.as_str())
            );
        }
        assert_eq!(
            "attaching files".parse::<JobStatus>().unwrap(),
            JobStatus::AttachingFiles
        );
        let st: JobStatus = serde_json::from_str("\"attaching files\"").unwrap();
        assert_eq!(st, JobStatus::AttachingFiles);
        assert!("bogus".parse::<JobStatus>().is_err());
        assert_eq!("outbox".parse::<Folder>().unwrap(), Folder::Outbox);
    }
}
