//! CouchDB design documents (from `priv/couchdb/views/`) and which database gets which.
