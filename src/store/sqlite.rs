//! The `embedded` store: every logical database in one SQLite file (WAL, full sync), with
//! CouchDB document semantics, attachments kept as chunked blobs, and the queue views as SQL.
//! The MODB fax listings have a table of their own (`modb_rows`): each live fax's listing row,
//! rendered when the fax is written and stored in listing order, so that a folder's page is
//! one range of that table, with no document read or parsed.
//!
//! One writer thread owns the write connection and commits writes in groups: writes that
//! arrive while a commit is in progress share the next transaction (each in its own
//! savepoint, so one failing write never undoes another) and one fsync; a write is
//! acknowledged only after its transaction committed. Reads use a small pool of reader
//! connections. Attachments are first spooled to a temporary file so the write
//! lock is held only for the time it takes to copy them in, never while a client uploads.

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value, json};
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    AccountId, Attachment, Backend, ByteStream, Change, CreatedRange, Cursor, Db, FaxboxAddress,
    JobRow, Listing, ModbEntry, ModbFilter, ModbRow, NewAttachment, Page, Result, SmtpLogRow,
    Store, StoreError, job_row, modb_entry, months_in_range, next_rev,
};
use crate::model::JobStatus;

/// Attachment chunk size in the blob table.
const CHUNK: usize = 256 * 1024;
/// Attachment uploads up to this size are kept in memory rather than spooled to a file.
const IN_MEMORY: usize = 1024 * 1024;
/// Reader threads, each with its own connection: every read but a large attachment's
/// stream runs on one of them, so the number of threads and connections (and their page
/// caches) stays fixed however many callers read at once.
const READERS: usize = 4;
/// Connections kept open for streaming large attachments.
const STREAMERS: usize = 2;
/// Connections for the small reads that run on the caller's own thread ([`SqliteStore::read_here`]).
const HERE_READERS: usize = 4;
/// Capacity of each database's change channel.
const CHANGE_CAPACITY: usize = 4096;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS dbs (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS docs (
    db TEXT NOT NULL,
    id TEXT NOT NULL,
    rev TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (db, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS docs_type_account ON docs (
    db, json_extract(body, '$.pvt_type'), json_extract(body, '$.pvt_account_id'));
CREATE INDEX IF NOT EXISTS docs_created ON docs (db, json_extract(body, '$.pvt_created'));
CREATE INDEX IF NOT EXISTS docs_queue ON docs (
    db, json_extract(body, '$.pvt_type'), json_extract(body, '$.pvt_job_status'),
    json_extract(body, '$.pvt_account_id'), coalesce(json_extract(body, '$.pvt_deleted'), 0),
    deleted);
DROP INDEX IF EXISTS docs_folder_created;
CREATE INDEX IF NOT EXISTS docs_due ON docs (
    db, json_extract(body, '$.pvt_account_id'), json_extract(body, '$.pvt_job_status'),
    coalesce(json_extract(body, '$.pvt_modified'), 0)
        + coalesce(json_extract(body, '$.retry_after'), 0),
    id);
CREATE INDEX IF NOT EXISTS docs_type_created ON docs (
    db, json_extract(body, '$.pvt_type'), coalesce(json_extract(body, '$.pvt_created'), 0));
CREATE INDEX IF NOT EXISTS docs_account_created ON docs (
    db, json_extract(body, '$.pvt_account_id'), coalesce(json_extract(body, '$.pvt_created'), 0));
CREATE INDEX IF NOT EXISTS docs_faxbox_created ON docs (
    db, json_extract(body, '$.faxbox_id'), coalesce(json_extract(body, '$.pvt_created'), 0));
CREATE INDEX IF NOT EXISTS docs_notify_due ON docs (
    db, json_extract(body, '$.pvt_notify.next_at'))
    WHERE json_extract(body, '$.pvt_notify.state') = 'pending';
CREATE TABLE IF NOT EXISTS attachments (
    db TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    length INTEGER NOT NULL,
    digest TEXT NOT NULL,
    blob INTEGER NOT NULL,
    PRIMARY KEY (db, id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    blob INTEGER NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (blob, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS modb_rows (
    db TEXT NOT NULL,
    folder TEXT NOT NULL,
    created INTEGER NOT NULL,
    id TEXT NOT NULL,
    faxbox_id TEXT,
    owner_id TEXT,
    listing TEXT NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (db, folder, created, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS modb_rows_id ON modb_rows (db, id);
CREATE INDEX IF NOT EXISTS modb_rows_faxbox ON modb_rows (db, faxbox_id, folder, created, id);
CREATE INDEX IF NOT EXISTS modb_rows_owner ON modb_rows (db, owner_id, folder, created, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO counters (name, value) VALUES ('seq', 0), ('blob', 0);
"#;

/// SQL condition shared by the fax views: a live fax document.
const LIVE_FAX: &str = "deleted = 0 AND json_extract(body, '$.pvt_type') = 'fax' \
     AND coalesce(json_extract(body, '$.pvt_deleted'), 0) = 0";

/// The embedded SQLite store.
pub struct SqliteStore {
    writer: std::sync::mpsc::Sender<PendingWrite>,
    reads: std::sync::mpsc::Sender<ReadJob>,
    /// Idle connections of [`SqliteStore::read_here`].
    here: Mutex<Vec<Connection>>,
    streamers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    spool: PathBuf,
    feeds: Mutex<HashMap<Db, broadcast::Sender<Change>>>,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            StoreError::Full(e.to_string())
        }
        other => StoreError::Backend(other.to_string()),
    }
}

/// An I/O error of the store's own files; a full disk is [`StoreError::Full`].
fn io_err(e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            StoreError::Full(e.to_string())
        }
        _ => StoreError::Io(e),
    }
}

fn join_err(e: tokio::task::JoinError) -> StoreError {
    StoreError::Backend(format!("store task failed: {e}"))
}

/// Page cache of each reader connection (negative: KiB). The writer keeps SQLite's 2 MiB.
const READER_CACHE: &str = "PRAGMA cache_size = -512;";

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db_err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )
    .map_err(db_err)?;
    // Plans never depend on bound values: without this, SQLite (built with STAT4) marks a
    // statement whose plan looked at a parameter, and every new binding of it prepares the
    // statement again (a fifth of a listing's CPU).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(db_err)?;
    Ok(conn)
}

/// A connection for reads. Readers look up single documents and short index ranges: a
/// small page cache each (the OS caches the file), so their memory stays flat as the store
/// grows.
fn open_reader(path: &Path) -> Result<Connection> {
    let conn = open_conn(path)?;
    conn.execute_batch(READER_CACHE).map_err(db_err)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store file `faxd.sqlite` in `data_dir`.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        let data_dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&data_dir))
            .await
            .map_err(join_err)?
    }

    fn open_blocking(data_dir: &Path) -> Result<Self> {
        // The directory, the file and its -wal/-shm are the owner's only (SQLite gives the
        // -wal and -shm files the mode of the database file).
        crate::files::private_dir(data_dir)?;
        let spool = data_dir.join("spool");
        // Leftovers of uploads interrupted by a crash: never referenced by the database.
        let _ = std::fs::remove_dir_all(&spool);
        crate::files::private_dir(&spool)?;
        let path = data_dir.join("faxd.sqlite");
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?;
        }
        crate::files::make_private(&path)?;
        let writer = open_conn(&path)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.clone().into_os_string();
            side.push(suffix);
            crate::files::make_private(Path::new(&side))?;
        }
        writer.execute_batch(SCHEMA).map_err(db_err)?;
        fill_listing_table(&writer)?;
        let (reads, queue) = std::sync::mpsc::channel::<ReadJob>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..READERS {
            let conn = open_reader(&path)?;
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("faxd-sqlite-reader-{n}"))
                .spawn(move || reader_loop(conn, queue))
                .map_err(StoreError::Io)?;
        }
        let mut here = Vec::with_capacity(HERE_READERS);
        for _ in 0..HERE_READERS {
            here.push(open_reader(&path)?);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("faxd-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(StoreError::Io)?;
        Ok(Self {
            writer: tx,
            reads,
            here: Mutex::new(here),
            streamers: Arc::new(Mutex::new(Vec::new())),
            path,
            spool,
            feeds: Mutex::new(HashMap::new()),
        })
    }

    /// Path of the SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` inside the writer's next transaction (in its own savepoint), then announces
    /// the changes it reports once the transaction committed.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<(T, Vec<Change>)> + Send + 'static,
    {
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::Write);
        let (reply, answer) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            f(conn).map(|(out, changes)| (Box::new(out) as Box<dyn Any + Send>, changes))
        });
        self.writer
            .send(PendingWrite { job, reply })
            .map_err(|_| StoreError::Unavailable("the store's writer stopped".into()))?;
        let (out, changes) = answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer stopped".into()))??;
        self.announce(changes);
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Backend("write result of an unexpected type".into()))
    }

    /// Runs `f` on one of the reader threads.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::Read);
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.reads
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store's readers stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's readers stopped".into()))?
    }

    /// Runs a small read (one document, one page of an index) on the caller's thread: it
    /// takes a few microseconds from the page cache, less than handing it to a reader thread
    /// and waking the caller again. When every connection of this path is busy, the read
    /// goes to the reader threads.
    async fn read_here<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let idle = self.here.lock().ok().and_then(|mut h| h.pop());
        let Some(conn) = idle else {
            return self.read(f).await;
        };
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::Read);
        // Back to the idle list even if `f` panics.
        struct Lent<'a>(&'a Mutex<Vec<Connection>>, Option<Connection>);
        impl Drop for Lent<'_> {
            fn drop(&mut self) {
                if let (Some(c), Ok(mut idle)) = (self.1.take(), self.0.lock()) {
                    idle.push(c);
                }
            }
        }
        let lent = Lent(&self.here, Some(conn));
        f(lent.1.as_ref().expect("lent connection"))
    }

    fn announce(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let feeds = match self.feeds.lock() {
            Ok(f) => f,
            Err(_) => return,
        };
        for change in changes {
            if let Some(tx) = feeds.get(&change.db) {
                let _ = tx.send(change);
            }
        }
    }

    /// Consistency check of the whole file: SQLite's integrity check, every body is a JSON
    /// object, and every attachment's chunks add up to its recorded length.
    pub async fn check(&self) -> Result<CheckReport> {
        self.read(|conn| {
            let integrity: String = conn
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .map_err(db_err)?;
            let docs: i64 = conn
                .query_row("SELECT count(*) FROM docs WHERE deleted = 0", [], |r| {
                    r.get(0)
                })
                .map_err(db_err)?;
            let bad_bodies: i64 = conn
                .query_row(
                    "SELECT count(*) FROM docs WHERE json_valid(body) = 0 OR json_type(body) != 'object'",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            let bad_attachments: i64 = conn
                .query_row(
                    "SELECT count(*) FROM attachments a WHERE a.length != \
                     (SELECT coalesce(sum(length(b.data)), 0) FROM blobs b WHERE b.blob = a.blob)",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            let orphans: i64 = conn
                .query_row(
                    "SELECT count(*) FROM attachments a WHERE NOT EXISTS \
                     (SELECT 1 FROM docs d WHERE d.db = a.db AND d.id = a.id AND d.deleted = 0)",
                    [],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            Ok(CheckReport {
                integrity,
                docs,
                bad_bodies,
                bad_attachments,
                orphan_attachments: orphans,
            })
        })
        .await
    }
}

/// A read waiting for a reader thread.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// A reader thread: runs reads with its connection until the store is dropped.
fn reader_loop(conn: Connection, queue: Arc<Mutex<std::sync::mpsc::Receiver<ReadJob>>>) {
    loop {
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(&conn),
            Err(_) => return,
        }
    }
}

/// A write waiting for the writer thread.
type WriteJob = Box<dyn FnOnce(&Connection) -> Result<(Box<dyn Any + Send>, Vec<Change>)> + Send>;
type WriteOutcome = Result<(Box<dyn Any + Send>, Vec<Change>)>;

struct PendingWrite {
    job: WriteJob,
    reply: oneshot::Sender<WriteOutcome>,
}

/// Most writes sharing one transaction.
const GROUP: usize = 128;

/// The writer thread: takes the writes that are waiting, runs each in a savepoint of one
/// transaction, commits once, then answers every caller. Ends when the store is dropped.
fn writer_loop(conn: Connection, rx: std::sync::mpsc::Receiver<PendingWrite>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for p in batch {
                let _ = p.reply.send(Err(StoreError::Unavailable(msg.clone())));
            }
            continue;
        }
        let mut done: Vec<(oneshot::Sender<WriteOutcome>, WriteOutcome)> =
            Vec::with_capacity(batch.len());
        // Why the transaction cannot commit; SQLite rolls the whole transaction back by
        // itself after some errors (a full disk), which then breaks the savepoint too.
        let mut broken: Option<StoreError> = None;
        for p in batch {
            if broken.is_some() {
                done.push((
                    p.reply,
                    Err(StoreError::Backend("transaction aborted".into())),
                ));
                continue;
            }
            if let Err(e) = conn.execute_batch("SAVEPOINT w") {
                broken = Some(db_err(e));
                done.push((
                    p.reply,
                    Err(StoreError::Backend("transaction aborted".into())),
                ));
                continue;
            }
            let outcome = (p.job)(&conn);
            let end = if outcome.is_ok() {
                conn.execute_batch("RELEASE w")
            } else {
                conn.execute_batch("ROLLBACK TO w; RELEASE w")
            };
            if let Err(e) = end {
                broken = Some(match &outcome {
                    Err(StoreError::Full(why)) => StoreError::Full(why.clone()),
                    _ => db_err(e),
                });
            }
            done.push((p.reply, outcome));
        }
        let committed = match broken {
            None => conn.execute_batch("COMMIT").map_err(db_err),
            Some(why) => Err(why),
        };
        match committed {
            Ok(()) => {
                for (reply, outcome) in done {
                    let _ = reply.send(outcome);
                }
            }
            Err(why) => {
                let _ = conn.execute_batch("ROLLBACK");
                let full = matches!(why, StoreError::Full(_));
                for (reply, _) in done {
                    let msg = format!("write not committed: {why}");
                    let _ = reply.send(Err(if full {
                        StoreError::Full(msg)
                    } else {
                        StoreError::Backend(msg)
                    }));
                }
            }
        }
    }
}

/// Result of [`SqliteStore::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub integrity: String,
    pub docs: i64,
    pub bad_bodies: i64,
    pub bad_attachments: i64,
    pub orphan_attachments: i64,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.integrity == "ok"
            && self.bad_bodies == 0
            && self.bad_attachments == 0
            && self.orphan_attachments == 0
    }
}

// ---- helpers running inside a transaction or on a reader connection ----

fn bump(tx: &Connection, counter: &str) -> Result<i64> {
    tx.prepare_cached("UPDATE counters SET value = value + 1 WHERE name = ?1 RETURNING value")
        .map_err(db_err)?
        .query_row([counter], |r| r.get(0))
        .map_err(db_err)
}

fn require_db(conn: &Connection, db: &Db) -> Result<()> {
    let found: Option<String> = conn
        .prepare_cached("SELECT name FROM dbs WHERE name = ?1")
        .map_err(db_err)?
        .query_row([db.name()], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NoDatabase(db.name())),
    }
}

/// (rev, deleted) of a document row.
fn current(conn: &Connection, db: &Db, id: &str) -> Result<Option<(String, bool)>> {
    conn.prepare_cached("SELECT rev, deleted FROM docs WHERE db = ?1 AND id = ?2")
        .map_err(db_err)?
        .query_row(params![db.name(), id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? != 0))
        })
        .optional()
        .map_err(db_err)
}

/// Checks `rev` against the stored document. Returns the revision the write replaces.
fn check_rev(conn: &Connection, db: &Db, id: &str, rev: Option<&str>) -> Result<Option<String>> {
    match (current(conn, db, id)?, rev) {
        (Some((cur, false)), Some(r)) if cur == r => Ok(Some(cur)),
        (Some((_, false)), _) => Err(StoreError::Conflict),
        (Some((cur, true)), None) => Ok(Some(cur)),
        (Some((cur, true)), Some(r)) if cur == r => Ok(Some(cur)),
        (None, None) => Ok(None),
        (_, Some(_)) => Err(StoreError::Conflict),
    }
}

/// A document's write: its `docs` row, then its listing row ([`sync_listing`]).
fn write_row(
    tx: &Connection,
    db: &Db,
    id: &str,
    rev: &str,
    deleted: bool,
    body: &str,
) -> Result<()> {
    write_doc(tx, db, id, rev, deleted, body)?;
    sync_listing(tx, db, id, (!deleted).then_some(body))
}

/// The `docs` row of a write, with the next change sequence. A write that changes only a
/// document's attachments calls this alone: its listing row is made of the body, never of the
/// revision nor the attachments.
fn write_doc(
    tx: &Connection,
    db: &Db,
    id: &str,
    rev: &str,
    deleted: bool,
    body: &str,
) -> Result<()> {
    let seq = bump(tx, "seq")?;
    tx.prepare_cached(
        "INSERT INTO docs (db, id, rev, deleted, seq, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (db, id) DO UPDATE SET rev = ?3, deleted = ?4, seq = ?5, body = ?6",
    )
    .map_err(db_err)?
    .execute(params![db.name(), id, rev, deleted as i64, seq, body])
    .map_err(db_err)?;
    Ok(())
}

/// Keeps `modb_rows` in step with a document written to a MODB: the listing row of a live
/// fax, no row for anything else (deleted, soft-deleted, not a fax).
fn sync_listing(tx: &Connection, db: &Db, id: &str, body: Option<&str>) -> Result<()> {
    if !matches!(db, Db::Modb(..)) {
        return Ok(());
    }
    let row = match body.map(|b| modb_entry_of_body(id.to_string(), b)) {
        Some(Ok(row)) => row,
        Some(Err(e)) => {
            tracing::warn!(%id, error = %e, "a MODB document that is not a JSON object is listed nowhere");
            None
        }
        None => None,
    };
    tx.prepare_cached("DELETE FROM modb_rows WHERE db = ?1 AND id = ?2")
        .map_err(db_err)?
        .execute(params![db.name(), id])
        .map_err(db_err)?;
    if let Some(r) = row {
        tx.prepare_cached(
            "INSERT INTO modb_rows (db, folder, created, id, faxbox_id, owner_id, listing, digest)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(db_err)?
        .execute(params![
            db.name(),
            r.folder.as_str(),
            r.row.created,
            id,
            r.faxbox_id,
            r.owner_id,
            r.row.listing,
            &r.row.digest[..]
        ])
        .map_err(db_err)?;
    }
    Ok(())
}

/// Fills `modb_rows` from the stored documents once, when a store file written before the
/// table existed is opened (the `modb_rows` counter records that it was filled).
fn fill_listing_table(conn: &Connection) -> Result<()> {
    let filled: Option<i64> = conn
        .query_row(
            "SELECT value FROM counters WHERE name = 'modb_rows'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    if filled.is_some() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    let mut rows = 0u64;
    {
        let mut stmt = tx
            .prepare("SELECT db, id, body FROM docs WHERE deleted = 0 AND db LIKE 'account/%-%'")
            .map_err(db_err)?;
        let mut q = stmt.query([]).map_err(db_err)?;
        while let Some(r) = q.next().map_err(db_err)? {
            let name: String = r.get(0).map_err(db_err)?;
            let Ok(db @ Db::Modb(..)) = Db::parse(&name) else {
                continue;
            };
            let id: String = r.get(1).map_err(db_err)?;
            let body: String = r.get(2).map_err(db_err)?;
            sync_listing(&tx, &db, &id, Some(&body))?;
            rows += 1;
        }
    }
    tx.execute(
        "INSERT INTO counters (name, value) VALUES ('modb_rows', 1)",
        [],
    )
    .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    if rows > 0 {
        tracing::info!(
            documents = rows,
            "listing table filled from the stored MODB documents"
        );
    }
    Ok(())
}

fn drop_attachment(tx: &Connection, db: &Db, id: &str, name: &str) -> Result<bool> {
    let blob: Option<i64> = tx
        .prepare_cached(
            "DELETE FROM attachments WHERE db = ?1 AND id = ?2 AND name = ?3 RETURNING blob",
        )
        .map_err(db_err)?
        .query_row(params![db.name(), id, name], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    if let Some(blob) = blob {
        tx.prepare_cached("DELETE FROM blobs WHERE blob = ?1")
            .map_err(db_err)?
            .execute([blob])
            .map_err(db_err)?;
    }
    Ok(blob.is_some())
}

fn attachment_names(conn: &Connection, db: &Db, id: &str) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT name FROM attachments WHERE db = ?1 AND id = ?2")
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![db.name(), id], |r| r.get::<_, String>(0))
        .map_err(db_err)?;
    rows.collect::<std::result::Result<Vec<_>, _>>()
        .map_err(db_err)
}

fn stubs(conn: &Connection, db: &Db, id: &str) -> Result<Option<Value>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT name, content_type, length, digest FROM attachments WHERE db = ?1 AND id = ?2 ORDER BY name",
        )
        .map_err(db_err)?;
    let mut rows = stmt.query(params![db.name(), id]).map_err(db_err)?;
    let mut map = Map::new();
    while let Some(r) = rows.next().map_err(db_err)? {
        let name: String = r.get(0).map_err(db_err)?;
        let ct: String = r.get(1).map_err(db_err)?;
        let len: i64 = r.get(2).map_err(db_err)?;
        let digest: String = r.get(3).map_err(db_err)?;
        map.insert(
            name,
            json!({"content_type": ct, "length": len, "digest": digest, "stub": true}),
        );
    }
    Ok(if map.is_empty() {
        None
    } else {
        Some(Value::Object(map))
    })
}

/// Builds the full document from a stored row.
fn assemble(conn: &Connection, db: &Db, id: &str, rev: &str, body: &str) -> Result<Value> {
    let mut doc: Map<String, Value> = serde_json::from_str(body)
        .map_err(|e| StoreError::Backend(format!("corrupt document {id}: {e}")))?;
    doc.insert("_id".into(), Value::String(id.to_string()));
    doc.insert("_rev".into(), Value::String(rev.to_string()));
    if let Some(att) = stubs(conn, db, id)? {
        doc.insert("_attachments".into(), att);
    }
    Ok(Value::Object(doc))
}

/// Runs a query that returns (id, body) rows of `db` and turns them into documents (without
/// attachment stubs, which views never need).
fn query_bodies(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Value>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
    let mut rows = stmt.query(params).map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db_err)? {
        let id: String = r.get(0).map_err(db_err)?;
        let body: String = r.get(1).map_err(db_err)?;
        let mut doc: Map<String, Value> = match serde_json::from_str(&body) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(%id, error = %e, "skipping unreadable document in a view");
                continue;
            }
        };
        doc.insert("_id".into(), Value::String(id));
        out.push(Value::Object(doc));
    }
    Ok(out)
}

/// The keys of a MODB fax document its listing entry is made of ([`modb_entry`]); the listing
/// parses only these, skipping the rest of each body.
#[derive(serde::Deserialize)]
struct ModbFields {
    pvt_type: Option<Value>,
    pvt_deleted: Option<Value>,
    folder: Option<Value>,
    pvt_job_status: Option<Value>,
    faxbox_id: Option<Value>,
    owner_id: Option<Value>,
    to_number: Option<Value>,
    from_number: Option<Value>,
    pvt_created: Option<Value>,
    from_name: Option<Value>,
    to_name: Option<Value>,
    tx_result: Option<Value>,
    rx_result: Option<Value>,
    pvt_pages: Option<Value>,
    pvt_delivered_date: Option<Value>,
}

/// Runs a listing query of `modb_rows` (`id, created, listing, digest`).
fn query_modb_rows(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<ModbRow>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
    let mut rows = stmt.query(params).map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db_err)? {
        let digest: [u8; 16] = r.get(3).map_err(db_err)?;
        out.push(ModbRow {
            id: r.get(0).map_err(db_err)?,
            created: r.get(1).map_err(db_err)?,
            listing: r.get(2).map_err(db_err)?,
            digest,
        });
    }
    Ok(out)
}

/// [`modb_entry`] of a stored body, parsing only the keys the entry is made of.
fn modb_entry_of_body(id: String, body: &str) -> serde_json::Result<Option<ModbEntry>> {
    let f: ModbFields = serde_json::from_str(body)?;
    let mut doc = Map::new();
    doc.insert("_id".into(), Value::String(id));
    for (k, v) in [
        ("pvt_type", f.pvt_type),
        ("pvt_deleted", f.pvt_deleted),
        ("folder", f.folder),
        ("pvt_job_status", f.pvt_job_status),
        ("faxbox_id", f.faxbox_id),
        ("owner_id", f.owner_id),
        ("to_number", f.to_number),
        ("from_number", f.from_number),
        ("pvt_created", f.pvt_created),
        ("from_name", f.from_name),
        ("to_name", f.to_name),
        ("tx_result", f.tx_result),
        ("rx_result", f.rx_result),
        ("pvt_pages", f.pvt_pages),
        ("pvt_delivered_date", f.pvt_delivered_date),
    ] {
        if let Some(v) = v {
            doc.insert(k.into(), v);
        }
    }
    Ok(modb_entry(&Value::Object(doc)))
}

fn jobs(rows: Vec<Value>) -> Vec<JobRow> {
    rows.iter().filter_map(job_row).collect()
}

/// A page of `limit` rows over the account's MODBs, newest month of `range` first (months
/// without a database are skipped): `month(db, left)` reads at most `left` rows of one
/// month, newest first; the next key is the first row left out.
fn modb_month_page<T>(
    account: &AccountId,
    range: CreatedRange,
    limit: usize,
    key: impl Fn(&T) -> Cursor,
    mut month: impl FnMut(&Db, i64) -> Result<Vec<T>>,
) -> Result<Listing<T>> {
    let want = limit + 1;
    let mut rows: Vec<T> = Vec::new();
    for m in months_in_range(range, 240) {
        // A month without a database has no rows: nothing to look up first.
        let db = Db::Modb(account.clone(), m);
        rows.extend(month(&db, (want - rows.len()) as i64)?);
        if rows.len() >= want {
            break;
        }
    }
    Ok(paginate(rows, limit, key))
}

/// Splits a listing query result of `limit + 1` rows into a page and its continuation key.
fn paginate<T>(mut rows: Vec<T>, limit: usize, key: impl Fn(&T) -> Cursor) -> Listing<T> {
    let next = if rows.len() > limit {
        let next = key(&rows[limit]).encode();
        rows.truncate(limit);
        Some(next)
    } else {
        None
    };
    Listing {
        rows,
        next_start_key: next,
    }
}

fn cursor_bounds(page: &Page) -> Result<(i64, String)> {
    match &page.start_key {
        Some(k) => {
            let c = Cursor::decode(k)?;
            Ok((c.created, c.id))
        }
        None => Ok((i64::MAX, "\u{10FFFF}".to_string())),
    }
}

fn list_jobs_by(
    conn: &Connection,
    field: &str,
    value: &str,
    status: Option<JobStatus>,
    range: CreatedRange,
    page: &Page,
) -> Result<Listing<JobRow>> {
    let (c_created, c_id) = cursor_bounds(page)?;
    let status = status.map(|s| s.as_str().to_string());
    // Walks the (field, created) index newest first: a page reads its rows, not the account.
    let index = match field {
        "faxbox_id" => "docs_faxbox_created",
        _ => "docs_account_created",
    };
    let sql = format!(
        "SELECT id, body FROM docs INDEXED BY {index} WHERE db = 'faxes' AND {LIVE_FAX}
           AND json_extract(body, '$.{field}') = ?1
           AND (?2 IS NULL OR json_extract(body, '$.pvt_job_status') = ?2)
           AND coalesce(json_extract(body, '$.pvt_created'), 0) BETWEEN ?3 AND ?4
           AND (coalesce(json_extract(body, '$.pvt_created'), 0) < ?5
                OR (coalesce(json_extract(body, '$.pvt_created'), 0) = ?5 AND id <= ?6))
         ORDER BY coalesce(json_extract(body, '$.pvt_created'), 0) DESC, id DESC
         LIMIT ?7"
    );
    let limit = page.limit as i64 + 1;
    let rows = query_bodies(
        conn,
        &sql,
        &[
            &value,
            &status,
            &range.from,
            &range.to,
            &c_created,
            &c_id,
            &limit,
        ],
    )?;
    Ok(paginate(jobs(rows), page.limit, |r| Cursor {
        created: r.created,
        id: r.id.clone(),
    }))
}

/// Splits a document to save into its id (a new one if absent), the revision it replaces,
/// the attachment stubs it keeps, and its body.
#[allow(clippy::type_complexity)]
fn split_doc(doc: Value) -> Result<(String, Option<String>, Vec<String>, Map<String, Value>)> {
    let Value::Object(mut doc) = doc else {
        return Err(StoreError::Invalid(
            "a document must be a JSON object".into(),
        ));
    };
    let id = match doc.remove("_id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        None => crate::ids::new_id(),
        Some(other) => return Err(StoreError::Invalid(format!("bad _id {other}"))),
    };
    let rev = match doc.remove("_rev") {
        Some(Value::String(s)) => Some(s),
        None | Some(Value::Null) => None,
        Some(other) => return Err(StoreError::Invalid(format!("bad _rev {other}"))),
    };
    let keep: Vec<String> = match doc.remove("_attachments") {
        Some(Value::Object(m)) => {
            if m.values().any(|a| a.get("data").is_some()) {
                return Err(StoreError::Invalid(
                    "inline attachment data is not supported; store attachments separately".into(),
                ));
            }
            m.keys().cloned().collect()
        }
        _ => vec![],
    };
    if id.starts_with('_') && !id.starts_with("_design/") {
        return Err(StoreError::Invalid(format!("reserved document id '{id}'")));
    }
    Ok((id, rev, keep, doc))
}

/// Where the bytes of an attachment being stored are: small uploads stay in memory, larger
/// ones are spooled to a file first.
enum BlobSource {
    Memory(Bytes),
    File(PathBuf),
}

/// Stores (replacing) attachment `name` of a document inside the write transaction; the
/// document row itself is written by the caller.
#[allow(clippy::too_many_arguments)]
fn store_blob(
    tx: &Connection,
    db: &Db,
    id: &str,
    name: &str,
    content_type: &str,
    length: u64,
    digest: &str,
    source: BlobSource,
) -> Result<()> {
    drop_attachment(tx, db, id, name)?;
    let blob = bump(tx, "blob")?;
    let mut insert = tx
        .prepare_cached("INSERT INTO blobs (blob, n, data) VALUES (?1, ?2, ?3)")
        .map_err(db_err)?;
    match source {
        BlobSource::Memory(data) => {
            for (n, chunk) in data.chunks(CHUNK).enumerate() {
                insert
                    .execute(params![blob, n as i64, chunk])
                    .map_err(db_err)?;
            }
        }
        BlobSource::File(path) => {
            let mut file = std::fs::File::open(&path)?;
            let mut buf = vec![0u8; CHUNK];
            let mut n: i64 = 0;
            loop {
                let got = read_full(&mut file, &mut buf)?;
                if got == 0 {
                    break;
                }
                insert
                    .execute(params![blob, n, &buf[..got]])
                    .map_err(db_err)?;
                n += 1;
            }
        }
    }
    tx.prepare_cached(
        "INSERT INTO attachments (db, id, name, content_type, length, digest, blob)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .map_err(db_err)?
    .execute(params![
        db.name(),
        id,
        name,
        content_type,
        length as i64,
        digest,
        blob
    ])
    .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Embedded
    }

    async fn ping(&self) -> Result<()> {
        self.read(|conn| {
            conn.query_row("SELECT value FROM counters WHERE name = 'seq'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|_| ())
            .map_err(db_err)
        })
        .await
    }

    async fn ensure_db(&self, db: &Db) -> Result<()> {
        let name = db.name();
        self.write(move |tx| {
            tx.execute("INSERT OR IGNORE INTO dbs (name) VALUES (?1)", [name])
                .map_err(db_err)?;
            Ok(((), vec![]))
        })
        .await
    }

    async fn db_exists(&self, db: &Db) -> Result<bool> {
        let db = db.clone();
        self.read_here(move |conn| match require_db(conn, &db) {
            Ok(()) => Ok(true),
            Err(StoreError::NoDatabase(_)) => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    async fn delete_db(&self, db: &Db) -> Result<()> {
        let name = db.name();
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM blobs WHERE blob IN (SELECT blob FROM attachments WHERE db = ?1)",
                [&name],
            )
            .map_err(db_err)?;
            tx.execute("DELETE FROM attachments WHERE db = ?1", [&name])
                .map_err(db_err)?;
            tx.execute("DELETE FROM docs WHERE db = ?1", [&name])
                .map_err(db_err)?;
            tx.execute("DELETE FROM modb_rows WHERE db = ?1", [&name])
                .map_err(db_err)?;
            tx.execute("DELETE FROM dbs WHERE name = ?1", [&name])
                .map_err(db_err)?;
            Ok(((), vec![]))
        })
        .await
    }

    /// A single writer never lets two writes of one revision both succeed: no conflicts.
    async fn get_leaves(&self, db: &Db, id: &str) -> Result<Vec<Value>> {
        Ok(self.get(db, id).await?.into_iter().collect())
    }

    async fn get(&self, db: &Db, id: &str) -> Result<Option<Value>> {
        let db = db.clone();
        let id = id.to_string();
        self.read_here(move |conn| {
            // The document and its attachment stubs in one statement (one read transaction).
            let row: Option<(String, String, String)> = conn
                .prepare_cached(
                    "SELECT d.rev, d.body,
                        (SELECT json_group_object(a.name, json_object(
                            'content_type', a.content_type, 'length', a.length,
                            'digest', a.digest, 'stub', json('true')))
                         FROM attachments a WHERE a.db = d.db AND a.id = d.id)
                     FROM docs d WHERE d.db = ?1 AND d.id = ?2 AND d.deleted = 0",
                )
                .map_err(db_err)?
                .query_row(params![db.name(), id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .map_err(db_err)?;
            match row {
                Some((rev, body, stubs)) => {
                    let mut doc: Map<String, Value> = serde_json::from_str(&body)
                        .map_err(|e| StoreError::Backend(format!("corrupt document {id}: {e}")))?;
                    doc.insert("_id".into(), Value::String(id));
                    doc.insert("_rev".into(), Value::String(rev));
                    if stubs != "{}" {
                        let stubs: Value = serde_json::from_str(&stubs)
                            .map_err(|e| StoreError::Backend(format!("attachment stubs: {e}")))?;
                        doc.insert("_attachments".into(), stubs);
                    }
                    Ok(Some(Value::Object(doc)))
                }
                // A missing database is told apart only on a miss (a stored document's
                // database exists).
                None => require_db(conn, &db).map(|()| None),
            }
        })
        .await
    }

    async fn get_text(&self, db: &Db, id: &str) -> Result<Option<(String, String)>> {
        let db = db.clone();
        let id = id.to_string();
        self.read_here(move |conn| {
            let row: Option<(String, String)> = conn
                .prepare_cached(
                    "SELECT rev, body FROM docs WHERE db = ?1 AND id = ?2 AND deleted = 0",
                )
                .map_err(db_err)?
                .query_row(params![db.name(), id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db_err)?;
            match row {
                Some(found) => Ok(Some(found)),
                None => require_db(conn, &db).map(|()| None),
            }
        })
        .await
    }

    async fn save(&self, db: &Db, doc: Value) -> Result<Value> {
        self.save_with_attachments(db, doc, Vec::new()).await
    }

    async fn save_with_attachments(
        &self,
        db: &Db,
        doc: Value,
        attachments: Vec<NewAttachment>,
    ) -> Result<Value> {
        let (id, rev, mut keep, doc) = split_doc(doc)?;
        let mut new = Vec::with_capacity(attachments.len());
        for a in attachments {
            if a.name.is_empty() || a.name.starts_with('_') {
                return Err(StoreError::Invalid(format!(
                    "bad attachment name '{}'",
                    a.name
                )));
            }
            keep.push(a.name.clone());
            let digest = format!("sha256-{}", hex::encode(sha2::Sha256::digest(&a.data)));
            new.push((a, digest));
        }
        let db2 = db.clone();
        self.write(move |tx| {
            require_db(tx, &db2)?;
            let prev = check_rev(tx, &db2, &id, rev.as_deref())?;
            for name in attachment_names(tx, &db2, &id)? {
                if !keep.contains(&name) {
                    drop_attachment(tx, &db2, &id, &name)?;
                }
            }
            let body = Value::Object(doc).to_string();
            let mut seed = body.clone();
            for (a, digest) in &new {
                let length = a.data.len() as u64;
                let source = BlobSource::Memory(a.data.clone());
                store_blob(
                    tx,
                    &db2,
                    &id,
                    &a.name,
                    &a.content_type,
                    length,
                    digest,
                    source,
                )?;
                seed.push_str(digest);
            }
            let new_rev = next_rev(prev.as_deref(), seed.as_bytes());
            write_row(tx, &db2, &id, &new_rev, false, &body)?;
            let saved = assemble(tx, &db2, &id, &new_rev, &body)?;
            let change = Change {
                db: db2.clone(),
                id,
                rev: new_rev,
                deleted: false,
            };
            Ok((saved, vec![change]))
        })
        .await
    }

    async fn delete(&self, db: &Db, id: &str, rev: &str) -> Result<String> {
        let db2 = db.clone();
        let id = id.to_string();
        let rev = rev.to_string();
        self.write(move |tx| {
            require_db(tx, &db2)?;
            match current(tx, &db2, &id)? {
                Some((cur, false)) if cur == rev => {}
                Some((_, false)) => return Err(StoreError::Conflict),
                _ => return Err(StoreError::NotFound(id)),
            }
            for name in attachment_names(tx, &db2, &id)? {
                drop_attachment(tx, &db2, &id, &name)?;
            }
            let new_rev = next_rev(Some(&rev), b"deleted");
            write_row(tx, &db2, &id, &new_rev, true, "{}")?;
            let change = Change {
                db: db2.clone(),
                id,
                rev: new_rev.clone(),
                deleted: true,
            };
            Ok((new_rev, vec![change]))
        })
        .await
    }

    async fn put_attachment(
        &self,
        db: &Db,
        id: &str,
        rev: Option<&str>,
        name: &str,
        content_type: &str,
        mut body: ByteStream,
    ) -> Result<String> {
        if name.is_empty() || name.starts_with('_') {
            return Err(StoreError::Invalid(format!("bad attachment name '{name}'")));
        }
        // Read the upload before taking the write lock, which is never held while a client
        // sends: up to IN_MEMORY bytes in memory, beyond that spooled to a file.
        let mut hasher = sha2::Sha256::new();
        let mut length: u64 = 0;
        let mut head: Vec<u8> = Vec::new();
        let mut spool: Option<(PathBuf, tokio::fs::File)> = None;
        let received: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                length += chunk.len() as u64;
                if spool.is_none() && head.len() + chunk.len() <= IN_MEMORY {
                    head.extend_from_slice(&chunk);
                    continue;
                }
                if spool.is_none() {
                    let path = self.spool.join(crate::ids::new_id());
                    let file = tokio::fs::File::create(&path).await.map_err(io_err)?;
                    spool = Some((path, file));
                }
                if let Some((_, file)) = spool.as_mut() {
                    if !head.is_empty() {
                        file.write_all(&std::mem::take(&mut head))
                            .await
                            .map_err(io_err)?;
                    }
                    file.write_all(&chunk).await.map_err(io_err)?;
                }
            }
            if let Some((_, file)) = spool.as_mut() {
                file.flush().await.map_err(io_err)?;
            }
            Ok(())
        }
        .await;
        let spool_path = spool.map(|(path, _)| path);
        if let Err(e) = received {
            if let Some(path) = &spool_path {
                let _ = tokio::fs::remove_file(path).await;
            }
            return Err(e);
        }
        let source = match &spool_path {
            Some(path) => BlobSource::File(path.clone()),
            None => BlobSource::Memory(Bytes::from(head)),
        };
        let digest = format!("sha256-{}", hex::encode(hasher.finalize()));
        let db2 = db.clone();
        let id = id.to_string();
        let rev = rev.map(str::to_string);
        let name = name.to_string();
        let ct = content_type.to_string();
        let res = self
            .write(move |tx| {
                require_db(tx, &db2)?;
                let prev = check_rev(tx, &db2, &id, rev.as_deref())?;
                let body: String = match &prev {
                    Some(_) => tx
                        .query_row(
                            "SELECT CASE deleted WHEN 0 THEN body ELSE '{}' END FROM docs WHERE db = ?1 AND id = ?2",
                            params![db2.name(), id],
                            |r| r.get(0),
                        )
                        .map_err(db_err)?,
                    None => "{}".to_string(),
                };
                store_blob(tx, &db2, &id, &name, &ct, length, &digest, source)?;
                let new_rev = next_rev(prev.as_deref(), digest.as_bytes());
                // A deleted or new document becomes `{}`, which is listed nowhere, as before.
                write_doc(tx, &db2, &id, &new_rev, false, &body)?;
                let change = Change {
                    db: db2.clone(),
                    id,
                    rev: new_rev.clone(),
                    deleted: false,
                };
                Ok((new_rev, vec![change]))
            })
            .await;
        if let Some(path) = &spool_path {
            let _ = tokio::fs::remove_file(path).await;
        }
        res
    }

    async fn get_attachment(&self, db: &Db, id: &str, name: &str) -> Result<Option<Attachment>> {
        // Small attachments are read whole by a reader thread; larger ones are streamed.
        let (db2, id2, name2) = (db.clone(), id.to_string(), name.to_string());
        let small = self
            .read(move |conn| read_small_blob(conn, &db2, &id2, &name2))
            .await?;
        match small {
            SmallBlob::Missing => return Ok(None),
            SmallBlob::Whole(content_type, data) => {
                return Ok(Some(Attachment {
                    content_type,
                    length: data.len() as u64,
                    body: super::bytes_stream(data),
                }));
            }
            SmallBlob::Large => {}
        }
        let db = db.clone();
        let id = id.to_string();
        let name = name.to_string();
        let readers = self.streamers.clone();
        let path = self.path.clone();
        let (head_tx, head_rx) = oneshot::channel::<Result<Option<(String, u64)>>>();
        let (data_tx, data_rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        // One read transaction for the whole stream: a concurrent replace cannot tear it.
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().ok().and_then(|mut r| r.pop());
            let mut conn = match conn {
                Some(c) => c,
                None => match open_conn(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = head_tx.send(Err(e));
                        return;
                    }
                },
            };
            stream_blob(&mut conn, &db, &id, &name, head_tx, &data_tx);
            if let Ok(mut r) = readers.lock()
                && r.len() < STREAMERS
            {
                r.push(conn);
            }
        });
        let head = head_rx
            .await
            .map_err(|_| StoreError::Backend("attachment reader stopped".into()))??;
        Ok(head.map(|(content_type, length)| Attachment {
            content_type,
            length,
            body: Box::pin(tokio_stream::wrappers::ReceiverStream::new(data_rx)),
        }))
    }

    async fn delete_attachment(&self, db: &Db, id: &str, rev: &str, name: &str) -> Result<String> {
        let db2 = db.clone();
        let id = id.to_string();
        let rev = rev.to_string();
        let name = name.to_string();
        self.write(move |tx| {
            require_db(tx, &db2)?;
            let prev = check_rev(tx, &db2, &id, Some(&rev))?;
            if !drop_attachment(tx, &db2, &id, &name)? {
                return Err(StoreError::NotFound(format!("{id}/{name}")));
            }
            let body: String = tx
                .query_row(
                    "SELECT body FROM docs WHERE db = ?1 AND id = ?2",
                    params![db2.name(), id],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            let new_rev = next_rev(prev.as_deref(), name.as_bytes());
            write_doc(tx, &db2, &id, &new_rev, false, &body)?;
            let change = Change {
                db: db2.clone(),
                id,
                rev: new_rev.clone(),
                deleted: false,
            };
            Ok((new_rev, vec![change]))
        })
        .await
    }

    async fn schedule_accounts(&self) -> Result<Vec<(AccountId, u64)>> {
        self.read(|conn| {
            let sql = format!(
                "SELECT json_extract(body, '$.pvt_account_id') AS a, count(*)
                 FROM docs INDEXED BY docs_queue
                 WHERE db = 'faxes' AND {LIVE_FAX}
                   AND json_extract(body, '$.pvt_job_status') IN ('pending', 'locked')
                 GROUP BY a ORDER BY a"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (account, count) = row.map_err(db_err)?;
                if let Some(a) = account.and_then(|a| AccountId::parse(&a).ok()) {
                    out.push((a, count as u64));
                }
            }
            Ok(out)
        })
        .await
    }

    /// One index seek per account and status: the next account after the last one found
    /// (a loose scan of `docs_queue`), however many jobs wait.
    async fn accounts_with_work(&self) -> Result<Vec<AccountId>> {
        self.read(|conn| {
            let sql =
                "SELECT min(json_extract(body, '$.pvt_account_id')) FROM docs INDEXED BY docs_queue
                 WHERE db = 'faxes' AND json_extract(body, '$.pvt_type') = 'fax'
                   AND json_extract(body, '$.pvt_job_status') = ?1
                   AND json_extract(body, '$.pvt_account_id') > ?2
                   AND coalesce(json_extract(body, '$.pvt_deleted'), 0) = 0 AND deleted = 0";
            let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
            let mut found = std::collections::BTreeSet::new();
            for status in [JobStatus::Pending, JobStatus::Locked] {
                let mut after = String::new();
                while let Some(a) = stmt
                    .query_row(params![status.as_str(), after], |r| {
                        r.get::<_, Option<String>>(0)
                    })
                    .map_err(db_err)?
                {
                    if let Ok(id) = AccountId::parse(&a) {
                        found.insert(id);
                    }
                    after = a;
                }
            }
            Ok(found.into_iter().collect())
        })
        .await
    }

    async fn queue_depth(&self) -> Result<Vec<(String, u64)>> {
        self.read(|conn| {
            let sql = format!(
                "SELECT json_extract(body, '$.pvt_job_status') AS s, count(*)
                 FROM docs INDEXED BY docs_queue
                 WHERE db = 'faxes' AND {LIVE_FAX}
                   AND typeof(json_extract(body, '$.pvt_job_status')) = 'text'
                 GROUP BY s ORDER BY s"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (status, count) = row.map_err(db_err)?;
                out.push((status, count.unsigned_abs()));
            }
            Ok(out)
        })
        .await
    }

    async fn jobs_by_account(&self, account: &AccountId, limit: usize) -> Result<Vec<JobRow>> {
        let account = account.to_string();
        self.read(move |conn| {
            let sql = format!(
                // In due order straight from `docs_due`: the first `limit` rows are read,
                // however many jobs the account has waiting.
                "SELECT id, body FROM docs INDEXED BY docs_due WHERE db = 'faxes' AND {LIVE_FAX}
                   AND json_extract(body, '$.pvt_account_id') = ?1
                   AND json_extract(body, '$.pvt_job_status') = 'pending'
                 ORDER BY coalesce(json_extract(body, '$.pvt_modified'), 0)
                        + coalesce(json_extract(body, '$.retry_after'), 0), id
                 LIMIT ?2"
            );
            let limit = limit as i64;
            Ok(jobs(query_bodies(conn, &sql, &[&account, &limit])?))
        })
        .await
    }

    async fn locked_jobs_by_account(&self, account: &AccountId) -> Result<Vec<JobRow>> {
        let account = account.to_string();
        self.read(move |conn| {
            let sql = format!(
                "SELECT id, body FROM docs WHERE db = 'faxes' AND {LIVE_FAX}
                   AND json_extract(body, '$.pvt_account_id') = ?1
                   AND json_extract(body, '$.pvt_job_status') = 'locked'
                 ORDER BY id"
            );
            Ok(jobs(query_bodies(conn, &sql, &[&account])?))
        })
        .await
    }

    async fn processing_by_node(&self, node: Option<&str>) -> Result<Vec<JobRow>> {
        let node = node.map(str::to_string);
        self.read(move |conn| {
            let sql = format!(
                "SELECT id, body FROM docs WHERE db = 'faxes' AND {LIVE_FAX}
                   AND json_extract(body, '$.pvt_job_status') = 'processing'
                   AND (?1 IS NULL OR json_extract(body, '$.pvt_job_node') = ?1)
                 ORDER BY json_extract(body, '$.pvt_job_node'), id"
            );
            Ok(jobs(query_bodies(conn, &sql, &[&node])?))
        })
        .await
    }

    async fn stale_jobs(&self, status: JobStatus, modified_before: i64) -> Result<Vec<JobRow>> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT id, body FROM docs WHERE db = 'faxes' AND {LIVE_FAX}
                   AND json_extract(body, '$.pvt_job_status') = ?1
                   AND coalesce(json_extract(body, '$.pvt_modified'), 0) <= ?2
                 ORDER BY coalesce(json_extract(body, '$.pvt_modified'), 0), id"
            );
            Ok(jobs(query_bodies(
                conn,
                &sql,
                &[&status.as_str(), &modified_before],
            )?))
        })
        .await
    }

    async fn list_by_account_state(
        &self,
        account: &AccountId,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>> {
        let account = account.to_string();
        self.read(move |conn| list_jobs_by(conn, "pvt_account_id", &account, status, range, &page))
            .await
    }

    async fn list_by_faxbox_state(
        &self,
        faxbox_id: &str,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>> {
        let faxbox = faxbox_id.to_string();
        self.read(move |conn| list_jobs_by(conn, "faxbox_id", &faxbox, status, range, &page))
            .await
    }

    async fn faxbox_by_email(&self, address: &str) -> Result<Option<FaxboxAddress>> {
        let address = address.trim().to_ascii_lowercase();
        self.read(move |conn| {
            let rows = query_bodies(
                conn,
                "SELECT id, body FROM docs WHERE db = 'faxes' AND deleted = 0
                   AND json_extract(body, '$.pvt_type') = 'faxbox'
                   AND coalesce(json_extract(body, '$.pvt_deleted'), 0) = 0
                   AND (lower(json_extract(body, '$.pvt_smtp_email_address')) = ?1
                        OR lower(json_extract(body, '$.custom_smtp_email_address')) = ?1)
                 ORDER BY id LIMIT 1",
                &[&address],
            )?;
            Ok(rows.first().and_then(|doc| {
                let account = doc.get("pvt_account_id")?.as_str()?;
                Some(FaxboxAddress {
                    account_id: AccountId::parse(account).ok()?,
                    faxbox_id: doc.get("_id")?.as_str()?.to_string(),
                })
            }))
        })
        .await
    }

    async fn modb_list(
        &self,
        account: &AccountId,
        filter: &ModbFilter,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<ModbRow>> {
        let account = account.clone();
        let filter = filter.clone();
        self.read_here(move |conn| {
            let (c_created, c_id) = cursor_bounds(&page)?;
            let (field, value, folder) = match &filter {
                ModbFilter::Folder(f) => (None, None, *f),
                ModbFilter::Faxbox(b, f) => (Some("faxbox_id"), Some(b.clone()), *f),
                ModbFilter::Owner(o, f) => (Some("owner_id"), Some(o.clone()), *f),
            };
            // One statement per scope (no `?n IS NULL` switch), each on its own index.
            let field_cond = match field {
                Some(f) => format!("AND {f} = ?2"),
                None => String::new(),
            };
            let sql = format!(
                "SELECT id, created, listing, digest FROM modb_rows
                 WHERE db = ?1 {field_cond} AND folder = ?3 AND created BETWEEN ?4 AND ?5
                   AND (created < ?6 OR (created = ?6 AND id <= ?7))
                 ORDER BY created DESC, id DESC
                 LIMIT ?8"
            );
            modb_month_page(&account, range, page.limit, ModbRow::cursor, |db, left| {
                query_modb_rows(
                    conn,
                    &sql,
                    &[
                        &db.name(),
                        &value,
                        &folder.as_str(),
                        &range.from,
                        &range.to,
                        &c_created,
                        &c_id,
                        &left,
                    ],
                )
            })
        })
        .await
    }

    async fn smtp_logs(
        &self,
        account: &AccountId,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<SmtpLogRow>> {
        let account = account.clone();
        self.read(move |conn| {
            let (c_created, c_id) = cursor_bounds(&page)?;
            let sql = "SELECT id, body FROM docs INDEXED BY docs_type_created
                 WHERE db = ?1 AND deleted = 0
                   AND json_extract(body, '$.pvt_type') = 'fax_smtp_log'
                   AND coalesce(json_extract(body, '$.pvt_deleted'), 0) = 0
                   AND coalesce(json_extract(body, '$.pvt_created'), 0) BETWEEN ?2 AND ?3
                   AND (coalesce(json_extract(body, '$.pvt_created'), 0) < ?4
                        OR (coalesce(json_extract(body, '$.pvt_created'), 0) = ?4 AND id <= ?5))
                 ORDER BY coalesce(json_extract(body, '$.pvt_created'), 0) DESC, id DESC
                 LIMIT ?6";
            modb_month_page(
                &account,
                range,
                page.limit,
                SmtpLogRow::cursor,
                |db, left| {
                    let got = query_bodies(
                        conn,
                        sql,
                        &[&db.name(), &range.from, &range.to, &c_created, &c_id, &left],
                    )?;
                    Ok(got.iter().filter_map(SmtpLogRow::from_doc).collect())
                },
            )
        })
        .await
    }

    async fn notify_due(&self, db: &Db, due_by: i64, limit: usize) -> Result<Vec<String>> {
        let db = db.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id FROM docs INDEXED BY docs_notify_due
                     WHERE db = ?1 AND deleted = 0
                       AND json_extract(body, '$.pvt_notify.state') = 'pending'
                       AND coalesce(json_extract(body, '$.pvt_notify.next_at'), 0) <= ?2
                     ORDER BY json_extract(body, '$.pvt_notify.next_at') LIMIT ?3",
                )
                .map_err(db_err)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(params![db.name(), due_by, limit], |r| r.get::<_, String>(0))
                .map_err(db_err)?;
            rows.collect::<std::result::Result<Vec<_>, _>>()
                .map_err(db_err)
        })
        .await
    }

    async fn docs_by_type(&self, db: &Db, pvt_type: &str) -> Result<Vec<Value>> {
        let db = db.clone();
        let pvt_type = pvt_type.to_string();
        self.read(move |conn| {
            require_db(conn, &db)?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, rev, body FROM docs WHERE db = ?1 AND deleted = 0 \
                     AND json_extract(body, '$.pvt_type') = ?2 ORDER BY id",
                )
                .map_err(db_err)?;
            let rows = stmt.query(params![db.name(), pvt_type]).map_err(db_err)?;
            whole_docs(rows)
        })
        .await
    }

    async fn docs_with_prefix(&self, db: &Db, prefix: &str) -> Result<Vec<Value>> {
        let db = db.clone();
        let from = prefix.to_string();
        // Every id that starts with the prefix sorts (bytewise, UTF-8) below prefix + U+10FFFF.
        let to = format!("{prefix}{}", char::MAX);
        self.read_here(move |conn| {
            require_db(conn, &db)?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, rev, body FROM docs WHERE db = ?1 AND deleted = 0 \
                     AND id >= ?2 AND id < ?3 ORDER BY id",
                )
                .map_err(db_err)?;
            let rows = stmt.query(params![db.name(), from, to]).map_err(db_err)?;
            whole_docs(rows)
        })
        .await
    }

    async fn subscribe(&self, db: &Db) -> Result<broadcast::Receiver<Change>> {
        let mut feeds = self
            .feeds
            .lock()
            .map_err(|_| StoreError::Backend("feed lock poisoned".into()))?;
        Ok(feeds
            .entry(db.clone())
            .or_insert_with(|| broadcast::channel(CHANGE_CAPACITY).0)
            .subscribe())
    }
}

/// Documents from rows of `id, rev, body`, each with its `_id` and `_rev`; an unreadable
/// body is skipped (and logged).
fn whole_docs(mut rows: rusqlite::Rows<'_>) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db_err)? {
        let id: String = r.get(0).map_err(db_err)?;
        let rev: String = r.get(1).map_err(db_err)?;
        let body: String = r.get(2).map_err(db_err)?;
        match serde_json::from_str::<Map<String, Value>>(&body) {
            Ok(mut doc) => {
                doc.insert("_id".into(), Value::String(id));
                doc.insert("_rev".into(), Value::String(rev));
                out.push(Value::Object(doc));
            }
            Err(e) => tracing::warn!(%id, error = %e, "skipping unreadable document"),
        }
    }
    Ok(out)
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// An attachment as a reader thread found it.
enum SmallBlob {
    Missing,
    /// Content type and bytes, read in one transaction.
    Whole(String, Vec<u8>),
    /// Longer than [`IN_MEMORY`]: to be streamed.
    Large,
}

fn read_small_blob(conn: &Connection, db: &Db, id: &str, name: &str) -> Result<SmallBlob> {
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    require_db(&tx, db)?;
    let meta: Option<(String, i64, i64)> = tx
        .prepare_cached(
            "SELECT a.content_type, a.length, a.blob FROM attachments a
             JOIN docs d ON d.db = a.db AND d.id = a.id AND d.deleted = 0
             WHERE a.db = ?1 AND a.id = ?2 AND a.name = ?3",
        )
        .map_err(db_err)?
        .query_row(params![db.name(), id, name], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(db_err)?;
    let Some((ct, length, blob)) = meta else {
        return Ok(SmallBlob::Missing);
    };
    if length as usize > IN_MEMORY {
        return Ok(SmallBlob::Large);
    }
    let mut data = Vec::with_capacity(length as usize);
    let mut stmt = tx
        .prepare_cached("SELECT data FROM blobs WHERE blob = ?1 ORDER BY n")
        .map_err(db_err)?;
    let mut rows = stmt.query([blob]).map_err(db_err)?;
    while let Some(row) = rows.next().map_err(db_err)? {
        let chunk = row.get_ref(0).map_err(db_err)?;
        data.extend_from_slice(chunk.as_blob().map_err(|e| db_err(e.into()))?);
    }
    Ok(SmallBlob::Whole(ct, data))
}

/// Streams one attachment's chunks inside a read transaction.
fn stream_blob(
    conn: &mut Connection,
    db: &Db,
    id: &str,
    name: &str,
    head_tx: oneshot::Sender<Result<Option<(String, u64)>>>,
    data_tx: &mpsc::Sender<std::io::Result<Bytes>>,
) {
    let tx = match conn.transaction() {
        Ok(t) => t,
        Err(e) => {
            let _ = head_tx.send(Err(db_err(e)));
            return;
        }
    };
    if let Err(e) = require_db(&tx, db) {
        let _ = head_tx.send(Err(e));
        return;
    }
    let meta: Option<(String, i64, i64)> = match tx
        .query_row(
            "SELECT a.content_type, a.length, a.blob FROM attachments a
             JOIN docs d ON d.db = a.db AND d.id = a.id AND d.deleted = 0
             WHERE a.db = ?1 AND a.id = ?2 AND a.name = ?3",
            params![db.name(), id, name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
    {
        Ok(m) => m,
        Err(e) => {
            let _ = head_tx.send(Err(db_err(e)));
            return;
        }
    };
    let Some((ct, length, blob)) = meta else {
        let _ = head_tx.send(Ok(None));
        return;
    };
    if head_tx.send(Ok(Some((ct, length as u64)))).is_err() {
        return;
    }
    let mut stmt = match tx.prepare("SELECT data FROM blobs WHERE blob = ?1 ORDER BY n") {
        Ok(s) => s,
        Err(e) => {
            let _ = data_tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            return;
        }
    };
    let mut rows = match stmt.query([blob]) {
        Ok(r) => r,
        Err(e) => {
            let _ = data_tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            return;
        }
    };
    loop {
        let item = match rows.next() {
            Ok(Some(row)) => match row.get::<_, Vec<u8>>(0) {
                Ok(data) => Ok(Bytes::from(data)),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            },
            Ok(None) => break,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        let failed = item.is_err();
        if data_tx.blocking_send(item).is_err() || failed {
            break;
        }
    }
}

/// Test support: an embedded store in a fresh temporary directory, with the global databases
/// a node creates at its first start. Keep the directory as long as the store is used.
#[cfg(test)]
pub(crate) async fn test_store() -> (super::SharedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: super::SharedStore = Arc::new(
        SqliteStore::open(dir.path())
            .await
            .expect("open the embedded store"),
    );
    crate::bootstrap::ensure_global_dbs(&store)
        .await
        .expect("global databases");
    (store, dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Folder;

    #[test]
    fn a_listing_row_from_the_parsed_keys_equals_the_row_of_the_whole_document() {
        let mut doc = serde_json::json!({
            "_id": "202612-0123", "pvt_type": "fax", "folder": "outbox",
            "pvt_job_status": "completed", "faxbox_id": "fb", "owner_id": "u1",
            "pvt_created": 63_900_000_000i64, "pvt_modified": 1, "attempts": 2,
            "document": {"url": "http://x"}, "notifications": {"email": {"send_to": ["a@b"]}},
        });
        for (n, k) in crate::store::MODB_SUMMARY_KEYS.iter().enumerate() {
            doc[*k] = serde_json::json!({"v": n});
        }
        let body = doc.to_string();
        let whole = modb_entry(&doc).expect("row");
        let parsed = modb_entry_of_body("202612-0123".into(), &body)
            .expect("parses")
            .expect("row");
        assert_eq!(parsed, whole);
        let listed: Value = serde_json::from_str(&parsed.row.listing).expect("JSON");
        for (n, k) in crate::store::MODB_SUMMARY_KEYS.iter().enumerate() {
            let name = match *k {
                "pvt_pages" => "pages",
                "pvt_delivered_date" => "delivered",
                other => other,
            };
            assert_eq!(listed[name], serde_json::json!({"v": n}), "{k}");
        }
        assert_eq!(listed["status"], "completed");
        assert_eq!(listed["faxbox_id"], "fb");
        doc["pvt_deleted"] = serde_json::json!(true);
        assert_eq!(
            modb_entry_of_body("x".into(), &doc.to_string()).unwrap(),
            None
        );
    }

    /// The listing rows of one folder, newest first: `(id, status)`.
    async fn listed(store: &SqliteStore, a: &AccountId, folder: Folder) -> Vec<(String, String)> {
        let page = store
            .modb_list(
                a,
                &ModbFilter::Folder(folder),
                CreatedRange::all(),
                Page::first(50),
            )
            .await
            .expect("listing");
        page.rows
            .iter()
            .map(|r| {
                // The stored digest is the digest of the row's text as read (pages' revisions
                // are made of them, so a changed row changes its page's revision).
                let full = sha2::Sha256::digest(r.listing.as_bytes());
                assert_eq!(r.digest[..], full[..16], "{}", r.listing);
                let v: Value = serde_json::from_str(&r.listing).expect("a JSON row");
                (r.id.clone(), v["status"].as_str().unwrap_or("").to_string())
            })
            .collect()
    }

    #[tokio::test]
    async fn the_listing_table_follows_every_write_and_is_filled_for_an_older_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = AccountId::generate();
        let month = crate::ids::YearMonth::from_gregorian(crate::time::now_gregorian());
        let db = Db::Modb(a.clone(), month);
        let fax = |n: i64, status: &str| {
            serde_json::json!({
                "_id": format!("{month}-{n:032x}"), "pvt_type": "fax", "folder": "outbox",
                "pvt_job_status": status, "pvt_created": 63_900_000_000i64 + n,
                "to_number": format!("+1415555{n:04}"),
            })
        };
        {
            let store = SqliteStore::open(dir.path()).await.expect("open");
            store.ensure_db(&db).await.expect("db");
            let one = store.save(&db, fax(1, "completed")).await.expect("save");
            let two = store.save(&db, fax(2, "failed")).await.expect("save");
            store
                .save(
                    &db,
                    serde_json::json!({"_id": "not-a-fax", "pvt_type": "fax_event"}),
                )
                .await
                .expect("save");
            assert_eq!(
                listed(&store, &a, Folder::Outbox).await,
                vec![
                    (
                        fax(2, "").get("_id").unwrap().as_str().unwrap().to_string(),
                        "failed".into()
                    ),
                    (
                        fax(1, "").get("_id").unwrap().as_str().unwrap().to_string(),
                        "completed".into()
                    ),
                ]
            );
            // A change shows at once; soft and hard deletes leave the listing; a move to
            // the inbox moves the row.
            let mut two = two;
            two["pvt_job_status"] = serde_json::json!("completed");
            let two = store.save(&db, two).await.expect("save");
            assert_eq!(listed(&store, &a, Folder::Outbox).await[0].1, "completed");
            let mut soft = two.clone();
            soft["pvt_deleted"] = serde_json::json!(true);
            store.save(&db, soft).await.expect("save");
            assert_eq!(listed(&store, &a, Folder::Outbox).await.len(), 1);
            store
                .delete(
                    &db,
                    one["_id"].as_str().unwrap(),
                    one["_rev"].as_str().unwrap(),
                )
                .await
                .expect("delete");
            assert!(listed(&store, &a, Folder::Outbox).await.is_empty());
            // Attachments leave the row as it is; one put on a deleted fax lists nothing.
            let three = store.save(&db, fax(3, "completed")).await.expect("save");
            let id3 = three["_id"].as_str().unwrap();
            let rev = store
                .put_attachment(
                    &db,
                    id3,
                    three["_rev"].as_str(),
                    "fax.pdf",
                    "application/pdf",
                    crate::store::bytes_stream(b"%PDF-1.4".to_vec()),
                )
                .await
                .expect("attach");
            store
                .delete_attachment(&db, id3, &rev, "fax.pdf")
                .await
                .expect("detach");
            assert_eq!(
                listed(&store, &a, Folder::Outbox).await,
                vec![(id3.to_string(), "completed".into())]
            );
            store
                .put_attachment(
                    &db,
                    one["_id"].as_str().unwrap(),
                    None,
                    "late.pdf",
                    "application/pdf",
                    crate::store::bytes_stream(b"%PDF-1.4".to_vec()),
                )
                .await
                .expect("attach to a deleted fax");
            assert_eq!(listed(&store, &a, Folder::Outbox).await.len(), 1);
            let mut inbox = fax(4, "");
            inbox["folder"] = serde_json::json!("inbox");
            store.save(&db, inbox).await.expect("save");
            assert_eq!(listed(&store, &a, Folder::Inbox).await.len(), 1);
            assert_eq!(listed(&store, &a, Folder::Outbox).await.len(), 1);
        }
        // A file from before the listing table: its rows are made when it is opened.
        {
            let conn = Connection::open(dir.path().join("faxd.sqlite")).expect("open file");
            conn.execute_batch(
                "DELETE FROM modb_rows; DELETE FROM counters WHERE name = 'modb_rows';",
            )
            .expect("forget the listing table");
        }
        let store = SqliteStore::open(dir.path()).await.expect("reopen");
        assert_eq!(listed(&store, &a, Folder::Outbox).await.len(), 1);
        assert_eq!(listed(&store, &a, Folder::Inbox).await.len(), 1);
        store.delete_db(&db).await.expect("drop the month");
        let conn = Connection::open(dir.path().join("faxd.sqlite")).expect("open file");
        let left: i64 = conn
            .query_row("SELECT count(*) FROM modb_rows", [], |r| r.get(0))
            .expect("count");
        assert_eq!(left, 0, "a dropped database leaves no listing rows");
    }
}
