//! The file proxy's shared parts (Kazoo's `fax_file_proxy`, made safe): a registry of the
//! documents that may be fetched — a worker registers its job's cached TIFF while the job is
//! processing and unregisters it when done — an address allow list, and the actix-web server
//! answering `GET /fax/<job_id>/<token>.tiff`. Anything else is 404, including the right URL
//! from an address that is not allowed. The actor running it is `faxd_actors::file_proxy`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

pub use crate::netblock::AllowList;

#[derive(Clone, Debug)]
struct Entry {
    token: String,
    path: PathBuf,
}

/// The documents currently served, by job id (one per job). Cheap to clone; shared by the
/// workers (register/unregister) and the HTTP handlers (take: a token serves one fetch).
#[derive(Clone, Debug, Default)]
pub struct FileRegistry {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl FileRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Entries are plain data: a panic elsewhere cannot leave them half-written.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves `path` for `job_id` under a new random token until [`FileRegistry::unregister`];
    /// returns the token. Registering a job again replaces its file and token.
    pub fn register(&self, job_id: &str, path: PathBuf) -> String {
        let token = crate::ids::new_id();
        self.lock().insert(
            job_id.to_string(),
            Entry {
                token: token.clone(),
                path,
            },
        );
        token
    }

    /// Stops serving `job_id`'s file.
    pub fn unregister(&self, job_id: &str) {
        self.lock().remove(job_id);
    }

    /// The file registered for `job_id` if `token` is its token.
    pub fn lookup(&self, job_id: &str, token: &str) -> Option<PathBuf> {
        let map = self.lock();
        let e = map.get(job_id)?;
        crate::auth::constant_time_eq(e.token.as_bytes(), token.as_bytes()).then(|| e.path.clone())
    }

    /// Like [`FileRegistry::lookup`], and spends the token: a document URL is good for one
    /// fetch (the job stays registered, under no token, until it is unregistered).
    pub fn take(&self, job_id: &str, token: &str) -> Option<PathBuf> {
        let mut map = self.lock();
        let e = map.get_mut(job_id)?;
        if e.token.is_empty()
            || !crate::auth::constant_time_eq(e.token.as_bytes(), token.as_bytes())
        {
            return None;
        }
        e.token.clear();
        Some(e.path.clone())
    }

    /// How many jobs are being served.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no job is being served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The URL path of a registered document: `/fax/<job_id>/<token>.tiff`.
    pub fn url_path(job_id: &str, token: &str) -> String {
        format!("/fax/{job_id}/{token}.tiff")
    }
}

/// What the HTTP handlers share.
struct ProxyState {
    files: FileRegistry,
    allow: AllowList,
}

async fn fetch(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<ProxyState>,
) -> HttpResponse {
    let (job_id, file) = path.into_inner();
    let allowed = req
        .peer_addr()
        .is_some_and(|peer| state.allow.allows(peer.ip()));
    // Only an allowed client spends the (one-time) token.
    let found = file
        .strip_suffix(".tiff")
        .filter(|_| allowed)
        .and_then(|token| state.files.take(&job_id, token));
    let (Some(path), true) = (found, allowed) else {
        tracing::debug!(%job_id, peer = ?req.peer_addr(), allowed, "file_proxy: 404");
        return HttpResponse::NotFound().finish();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => HttpResponse::Ok().content_type("image/tiff").body(bytes),
        Err(e) => {
            tracing::warn!(%job_id, path = %path.display(), error = %e, "file_proxy: registered file unreadable");
            HttpResponse::NotFound().finish()
        }
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().finish()
}

/// The file proxy's HTTP server on `listener` (not yet running: await it or spawn it). Its
/// connections are bounded (an eighth of the descriptors the process may open) and a request
/// head must arrive within 10 s.
pub fn server(
    files: FileRegistry,
    allow: AllowList,
    listener: TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(ProxyState { files, allow });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/fax/{job_id}/{file}", web::get().to(fetch))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .max_connections(crate::conn_limit::fd_budget(1024, 0.125))
    .client_request_timeout(std::time::Duration::from_secs(10))
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry() {
        let r = FileRegistry::default();
        let t = r.register("job1", "/tmp/a.tiff".into());
        assert_eq!(t.len(), 32);
        assert_eq!(r.lookup("job1", &t), Some(PathBuf::from("/tmp/a.tiff")));
        assert_eq!(r.lookup("job1", "x"), None);
        assert_eq!(r.lookup("job2", &t), None);
        assert_eq!(
            FileRegistry::url_path("job1", &t),
            format!("/fax/job1/{t}.tiff")
        );
        let t2 = r.register("job1", "/tmp/b.tiff".into());
        assert_eq!(r.lookup("job1", &t), None);
        assert_eq!(r.lookup("job1", &t2), Some(PathBuf::from("/tmp/b.tiff")));
        assert_eq!(r.take("job1", &t2), Some(PathBuf::from("/tmp/b.tiff")));
        assert_eq!(r.take("job1", &t2), None, "a token serves once");
        assert_eq!(r.take("job1", ""), None);
        assert_eq!(r.len(), 1, "still registered until the call ends");
        r.unregister("job1");
        assert!(r.is_empty());
        assert_eq!(r.lookup("job1", &t2), None);
    }
}
