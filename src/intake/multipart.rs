//! A small `multipart/mixed` / `multipart/form-data` reader (RFC 2046) for fax submissions:
//! a JSON part with the job and a document part. The body is already in memory (and size
//! limited) when it gets here.

use bytes::Bytes;

/// One part of a multipart body.
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// Lower-cased media type without parameters; empty when the part has none.
    pub content_type: String,
    /// `name` from `Content-Disposition`, if any.
    pub name: Option<String>,
    /// `filename` from `Content-Disposition`, if any.
    pub filename: Option<String>,
    pub body: Bytes,
}

/// The `boundary` parameter of a multipart content type.
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

fn param(header: &str, key: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Splits a multipart body into its parts. `Err` explains what is malformed.
pub fn parse(body: &Bytes, boundary: &str) -> Result<Vec<Part>, String> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos = find(body, delim, 0).ok_or("multipart body without its boundary")?;
    let mut parts = Vec::new();
    loop {
        let after = pos + delim.len();
        if body.get(after..after + 2) == Some(b"--") {
            break;
        }
        // Skip to the end of the delimiter line.
        let line_end = find(body, b"\r\n", after).ok_or("truncated multipart body")? + 2;
        let headers_end = match find(body, b"\r\n\r\n", line_end) {
            Some(i) if i >= line_end => i,
            _ if body.get(line_end..line_end + 2) == Some(b"\r\n") => line_end,
            _ => return Err("multipart part without a header end".into()),
        };
        let headers = String::from_utf8_lossy(&body[line_end..headers_end]).to_string();
        let content_start = if headers_end == line_end {
            line_end + 2
        } else {
            headers_end + 4
        };
        let mut close = Vec::with_capacity(delim.len() + 2);
        close.extend_from_slice(b"\r\n");
        close.extend_from_slice(delim);
        let next = find(body, &close, content_start).ok_or("multipart part is not closed")?;
        let mut part = Part {
            content_type: String::new(),
            name: None,
            filename: None,
            body: body.slice(content_start..next),
        };
        for line in headers.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let k = k.trim().to_ascii_lowercase();
            if k == "content-type" {
                part.content_type = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
            } else if k == "content-disposition" {
                part.name = param(v, "name");
                part.filename = param(v, "filename");
            }
        }
        parts.push(part);
        pos = next + 2;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curl_style_bodies() {
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"content\"; filename=\"job.json\"\r\n\
Content-Type: application/json\r\n\r\n{\"data\":{}}\r\n--XyZ\r\n\
Content-Disposition: form-data; name=\"content\"; filename=\"a.pdf\"\r\nContent-Type: application/pdf\r\n\r\n\
%PDF-1.4\r\nbinary\r\n--XyZ--\r\n",
        );
        assert_eq!(
            boundary("multipart/form-data; boundary=XyZ").as_deref(),
            Some("XyZ")
        );
        let parts = parse(&body, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_type, "application/json");
        assert_eq!(&parts[0].body[..], b"{\"data\":{}}");
        assert_eq!(parts[1].filename.as_deref(), Some("a.pdf"));
        assert_eq!(&parts[1].body[..], b"%PDF-1.4\r\nbinary");
        assert!(parse(&Bytes::from_static(b"nothing"), "XyZ").is_err());
    }
}
