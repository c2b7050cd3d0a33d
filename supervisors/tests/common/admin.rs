//! The v2 API as the first-start admin of a node, and starting/stopping a node with extra
//! settings: shared by the tests that drive a real `faxd` through the API.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::Node;

/// A node on its own data directory, with `extra` environment on top of the defaults.
pub async fn start_node(dir: &Path, extra: &[(&str, &str)]) -> Node {
    let path = dir.to_path_buf();
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut env = Node::env_for(&path);
        env.extend(extra);
        Node::start(&path, env)
    })
    .await
    .expect("start faxd")
}

pub async fn stop_node(node: Node) {
    tokio::task::spawn_blocking(move || assert_eq!(node.stop_with("TERM"), 0))
        .await
        .expect("stop faxd");
}

/// The v2 API as the first-start admin (a superduper admin) of the root account.
pub struct Admin {
    pub http: reqwest::Client,
    pub api: String,
    pub token: String,
    pub account: String,
}

impl Admin {
    pub async fn login(node: &Node, dir: &Path) -> Admin {
        let http = reqwest::Client::new();
        let api = node.url("/v2");
        let creds = std::fs::read_to_string(dir.join("admin-credentials")).expect("credentials");
        let get = |key: &str| {
            creds
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
                .unwrap_or_else(|| panic!("{key} missing from admin-credentials"))
        };
        let r: Value = http
            .put(format!("{api}/user_auth"))
            .json(&json!({"data": {
                "credentials": get("credentials"),
                "account_name": get("account_name"),
            }}))
            .send()
            .await
            .expect("user_auth")
            .json()
            .await
            .expect("user_auth answer");
        let admin = Admin {
            token: r["auth_token"].as_str().expect("auth_token").to_string(),
            account: r["data"]["account_id"]
                .as_str()
                .expect("account_id")
                .to_string(),
            http,
            api,
        };
        // The faxes are sent from +15551230000: a number of the account.
        super::own_number(
            &admin.http,
            &admin.api,
            &admin.token,
            &admin.account,
            "+15551230000",
        )
        .await;
        admin
    }

    /// `method path` with a JSON envelope; the status and the JSON answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        data: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .header("X-Auth-Token", &self.token);
        if let Some(d) = data {
            req = req.json(&json!({ "data": d }));
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v["data"].clone()
    }

    /// Merges `sections` into `system_configs/fax`, as an operator changes a setting.
    pub async fn patch_fax_config(&self, sections: Value) {
        let (status, v) = self
            .call(
                reqwest::Method::PATCH,
                "/system_configs/fax",
                Some(sections),
            )
            .await;
        assert_eq!(status, 200, "PATCH system_configs/fax: {v}");
    }

    /// Creates a child account of the admin's account; its id.
    pub async fn child_account(&self, name: &str) -> String {
        let (status, v) = self
            .call(
                reqwest::Method::PUT,
                &format!("/accounts/{}", self.account),
                Some(json!({"name": name})),
            )
            .await;
        assert!(status == 200 || status == 201, "create account: {v}");
        let id = v["data"]["id"].as_str().expect("account id").to_string();
        // Its faxes use the parent's caller id, as a carrier lets a customer do.
        let (status, v) = self
            .call(
                reqwest::Method::PATCH,
                &format!("/accounts/{id}"),
                Some(json!({"fax_allow_any_caller_id": true})),
            )
            .await;
        assert_eq!(status, 200, "allow any caller id: {v}");
        id
    }

    /// Submits a fax TIFF of `pages` pages to `to` for `account` with extra job fields.
    pub async fn submit(&self, account: &str, to: &str, pages: u32, extra: Value) -> String {
        let mut meta = json!({"from_number": "+15551230000", "to_number": to, "retries": 1});
        if let (Some(m), Some(e)) = (meta.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        let tiff = faxd::outbound::docs::blank_tiff(pages);
        let job = super::submit_fax(
            &self.http,
            &format!("{}/accounts/{account}/faxes", self.api),
            &self.token,
            &json!({ "data": meta }),
            "image/tiff",
            &tiff,
        )
        .await;
        let id = job["id"].as_str().expect("job id").to_string();
        // Answered once stored; converted in the background: queued (or already sent).
        let status =
            super::poll_async("the intake of the fax", Duration::from_secs(60), || async {
                match self.queued(account, &id).await {
                    Some(q) if q["status"] == "attaching_files" => None,
                    Some(q) => Some(q["status"].as_str().unwrap_or_default().to_string()),
                    None => Some("sent".to_string()),
                }
            })
            .await;
        assert_ne!(status, "failed", "{job}");
        id
    }

    /// The queued job `id` of `account` (`None` once it left the queue).
    pub async fn queued(&self, account: &str, id: &str) -> Option<Value> {
        let (status, v) = self
            .call(
                reqwest::Method::GET,
                &format!("/accounts/{account}/faxes/outgoing/{id}"),
                None,
            )
            .await;
        (status == 200).then(|| v["data"].clone())
    }

    /// Waits until job `id` of `account` is in the outbox; its document there.
    pub async fn final_doc(&self, account: &str, id: &str, within: Duration) -> Value {
        let faxes = format!("/accounts/{account}/faxes");
        let outbox_id = super::poll_async("the fax in the outbox", within, || async {
            let (status, list) = self
                .call(reqwest::Method::GET, &format!("{faxes}/outbox"), None)
                .await;
            if status != 200 {
                return None;
            }
            list["data"]
                .as_array()?
                .iter()
                .filter_map(|f| f["id"].as_str())
                .find(|x| x.ends_with(id))
                .map(str::to_string)
        })
        .await;
        self.get(&format!("{faxes}/outbox/{outbox_id}")).await
    }
}

impl Admin {
    /// `GET path` as raw bytes: status, content type, body.
    pub async fn download(&self, path: &str) -> (u16, String, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}{path}", self.api))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .expect("download");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, ct, r.bytes().await.expect("body").to_vec())
    }

    /// The faxes in `account`'s inbox.
    pub async fn inbox(&self, account: &str) -> Vec<Value> {
        self.get(&format!("/accounts/{account}/faxes/inbox"))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}
