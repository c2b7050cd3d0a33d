//! The `couchdb` store: CouchDB 3 over HTTP with couch_rs, Kazoo's database layout.
