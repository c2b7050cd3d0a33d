//! A store that shows every write to an observer just before and just after it passes to the
//! store it wraps (reads pass straight through): the API's authentication cache drops what a
//! write changes, the scheduler bench counts writes by kind.

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::broadcast;

use super::{
    AccountId, Attachment, Backend, ByteStream, Change, CreatedRange, Db, FaxboxAddress, JobRow,
    Listing, ModbFilter, ModbRow, NewAttachment, Page, Result, SharedStore, SmtpLogRow, Store,
};
use crate::model::JobStatus;

/// One write, as an observer sees it.
#[derive(Clone, Copy, Debug)]
pub enum Write<'a> {
    /// [`Store::save`]; `id` is `None` for a new document without one.
    Save {
        db: &'a Db,
        id: Option<&'a str>,
    },
    SaveWithAttachments {
        db: &'a Db,
        id: Option<&'a str>,
    },
    Delete {
        db: &'a Db,
        id: &'a str,
    },
    PutAttachment {
        db: &'a Db,
        id: &'a str,
    },
    DeleteAttachment {
        db: &'a Db,
        id: &'a str,
    },
    DeleteDb {
        db: &'a Db,
    },
}

/// What is told of the writes.
pub trait WriteObserver: Send + Sync + 'static {
    /// Before the write reaches the store.
    fn before(&self, _write: &Write<'_>) {}
    /// After the store answered (whether or not the write succeeded).
    fn after(&self, _write: &Write<'_>) {}
}

/// The wrapping store.
pub struct Observed<O> {
    inner: SharedStore,
    observer: O,
}

impl<O: WriteObserver> Observed<O> {
    pub fn new(inner: SharedStore, observer: O) -> Self {
        Self { inner, observer }
    }

    pub fn observer(&self) -> &O {
        &self.observer
    }

    async fn around<T>(&self, write: Write<'_>, op: impl Future<Output = Result<T>>) -> Result<T> {
        self.observer.before(&write);
        let out = op.await;
        self.observer.after(&write);
        out
    }
}

fn doc_id(doc: &Value) -> Option<String> {
    doc.get("_id").and_then(Value::as_str).map(str::to_string)
}

#[async_trait]
impl<O: WriteObserver> Store for Observed<O> {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn ensure_db(&self, db: &Db) -> Result<()> {
        self.inner.ensure_db(db).await
    }

    async fn db_exists(&self, db: &Db) -> Result<bool> {
        self.inner.db_exists(db).await
    }

    async fn delete_db(&self, db: &Db) -> Result<()> {
        self.around(Write::DeleteDb { db }, self.inner.delete_db(db))
            .await
    }

    async fn get(&self, db: &Db, id: &str) -> Result<Option<Value>> {
        self.inner.get(db, id).await
    }

    async fn get_leaves(&self, db: &Db, id: &str) -> Result<Vec<Value>> {
        self.inner.get_leaves(db, id).await
    }

    async fn save(&self, db: &Db, doc: Value) -> Result<Value> {
        let id = doc_id(&doc);
        let write = Write::Save {
            db,
            id: id.as_deref(),
        };
        self.around(write, self.inner.save(db, doc)).await
    }

    async fn save_with_attachments(
        &self,
        db: &Db,
        doc: Value,
        attachments: Vec<NewAttachment>,
    ) -> Result<Value> {
        let id = doc_id(&doc);
        let write = Write::SaveWithAttachments {
            db,
            id: id.as_deref(),
        };
        self.around(
            write,
            self.inner.save_with_attachments(db, doc, attachments),
        )
        .await
    }

    async fn delete(&self, db: &Db, id: &str, rev: &str) -> Result<String> {
        self.around(Write::Delete { db, id }, self.inner.delete(db, id, rev))
            .await
    }

    async fn put_attachment(
        &self,
        db: &Db,
        id: &str,
        rev: Option<&str>,
        name: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<String> {
        let op = self
            .inner
            .put_attachment(db, id, rev, name, content_type, body);
        self.around(Write::PutAttachment { db, id }, op).await
    }

    async fn get_attachment(&self, db: &Db, id: &str, name: &str) -> Result<Option<Attachment>> {
        self.inner.get_attachment(db, id, name).await
    }

    async fn delete_attachment(&self, db: &Db, id: &str, rev: &str, name: &str) -> Result<String> {
        let op = self.inner.delete_attachment(db, id, rev, name);
        self.around(Write::DeleteAttachment { db, id }, op).await
    }

    async fn schedule_accounts(&self) -> Result<Vec<(AccountId, u64)>> {
        self.inner.schedule_accounts().await
    }

    async fn get_text(&self, db: &Db, id: &str) -> Result<Option<(String, String)>> {
        self.inner.get_text(db, id).await
    }

    async fn accounts_with_work(&self) -> Result<Vec<AccountId>> {
        self.inner.accounts_with_work().await
    }

    async fn queue_depth(&self) -> Result<Vec<(String, u64)>> {
        self.inner.queue_depth().await
    }

    async fn jobs_by_account(&self, account: &AccountId, limit: usize) -> Result<Vec<JobRow>> {
        self.inner.jobs_by_account(account, limit).await
    }

    async fn locked_jobs_by_account(&self, account: &AccountId) -> Result<Vec<JobRow>> {
        self.inner.locked_jobs_by_account(account).await
    }

    async fn processing_by_node(&self, node: Option<&str>) -> Result<Vec<JobRow>> {
        self.inner.processing_by_node(node).await
    }

    async fn stale_jobs(&self, status: JobStatus, modified_before: i64) -> Result<Vec<JobRow>> {
        self.inner.stale_jobs(status, modified_before).await
    }

    async fn list_by_account_state(
        &self,
        account: &AccountId,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>> {
        self.inner
            .list_by_account_state(account, status, range, page)
            .await
    }

    async fn list_by_faxbox_state(
        &self,
        faxbox_id: &str,
        status: Option<JobStatus>,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<JobRow>> {
        self.inner
            .list_by_faxbox_state(faxbox_id, status, range, page)
            .await
    }

    async fn faxbox_by_email(&self, address: &str) -> Result<Option<FaxboxAddress>> {
        self.inner.faxbox_by_email(address).await
    }

    async fn modb_list(
        &self,
        account: &AccountId,
        filter: &ModbFilter,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<ModbRow>> {
        self.inner.modb_list(account, filter, range, page).await
    }

    async fn smtp_logs(
        &self,
        account: &AccountId,
        range: CreatedRange,
        page: Page,
    ) -> Result<Listing<SmtpLogRow>> {
        self.inner.smtp_logs(account, range, page).await
    }

    async fn notify_due(&self, db: &Db, due_by: i64, limit: usize) -> Result<Vec<String>> {
        self.inner.notify_due(db, due_by, limit).await
    }

    async fn docs_by_type(&self, db: &Db, pvt_type: &str) -> Result<Vec<Value>> {
        self.inner.docs_by_type(db, pvt_type).await
    }

    async fn docs_with_prefix(&self, db: &Db, prefix: &str) -> Result<Vec<Value>> {
        self.inner.docs_with_prefix(db, prefix).await
    }

    async fn subscribe(&self, db: &Db) -> Result<broadcast::Receiver<Change>> {
        self.inner.subscribe(db).await
    }
}
