// faxd test server: a CouchDB 3 compatible HTTP API for faxd's tests, built on
// express-pouchdb (from pouchdb-server@4.2.0) with in-memory storage (memdown).
//
//   node tests/couchdb/server.js [--host 127.0.0.1] [--port N] [--port-file FILE]
//
// Port 0 (the default) picks a free port. Once listening, `http://HOST:PORT` is
// written atomically to FILE and `listening http://HOST:PORT` printed on stdout.
// Nothing is written to disk: config is in memory, the log goes to /dev/null.
//
// CouchDB 3 behaviours restored on top of stock express-pouchdb:
//  1. '/' is kept in database names (stock runs them through sanitize-filename
//     and mkdir's a directory per name); PUT rejects names CouchDB rejects.
//  2. no gzip compression (stock buffers a continuous _changes feed forever
//     when the client sends Accept-Encoding: gzip).
//  3. _changes: feed=continuous honours timeout (timeout=0 returns what is there
//     and closes with {"last_seq"}), heartbeat, limit and since; longpoll and
//     normal feeds likewise. Sequences are opaque strings as in CouchDB 3.
//  4. GET / and GET /_up answer like CouchDB 3.3.3.
//  5. GET /{db} answers with CouchDB 3 fields (string update_seq, sizes, ...).
//  6. 60 MB attachments: no JSON-stringified Buffers when computing revs.
//  7. POST /{db}/_all_docs/queries and /{db}/_design/{d}/_view/{v}/queries.
//  Also: JSON content type always, 404/412 bodies for missing/existing dbs,
//  and Basic auth credentials are ignored (admin party: everyone is admin).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const express = require('express');

// ---- command line --------------------------------------------------------
const args = { host: '127.0.0.1', port: '0', 'port-file': null };
for (let i = 2; i < process.argv.length; i++) {
  const m = /^--(host|port|port-file)(?:=(.*))?$/.exec(process.argv[i]);
  if (!m) {
    console.error('usage: node server.js [--host 127.0.0.1] [--port N] [--port-file FILE]');
    process.exit(2);
  }
  args[m[1]] = m[2] !== undefined ? m[2] : process.argv[++i];
}

// ---- 1. database names ---------------------------------------------------
// Replace express-pouchdb's clean-filename module (sanitize-filename, strips
// '/') with the identity before any route module captures it.
require('express-pouchdb/lib/clean-filename');
require.cache[require.resolve('express-pouchdb/lib/clean-filename')].exports = (name) => name;
const epUtils = require('express-pouchdb/lib/utils');
const { getOrCreateDB } = require('express-pouchdb/lib/create-or-delete-dbs');
// Same as stock setDBOnReq, minus the mkdirp of names containing '/'.
epUtils.setDBOnReq = function (dbName, dbWrapper, req, res, next) {
  req.PouchDB.allDbs((err, dbs) => {
    if (err) return epUtils.sendError(res, err);
    if (!dbs.includes(dbName)) {
      return epUtils.sendJSON(res, 404, { error: 'not_found', reason: 'Database does not exist.' });
    }
    getOrCreateDB(req.PouchDB, dbName)
      .then((db) => dbWrapper.wrap(dbName, db).then(() => { req.db = db; next(); }))
      .catch((e) => epUtils.sendError(res, e));
  });
};
const DB_NAME = /^[a-z][a-z0-9_$()+/-]*$/;
const SYSTEM_DBS = ['_users', '_replicator', '_global_changes'];

// ---- 6. big attachments -----------------------------------------------------
// PouchDB's deterministic rev is md5(JSON.stringify(doc)), which turns a
// binary attachment into a JSON array of numbers: a 60 MB PUT took 18 s and
// 2.5 GB. Hash Buffers by their md5 instead (revs stay deterministic).
const pouchUtils = require('pouchdb-utils');
const stockRev = pouchUtils.rev;
pouchUtils.rev = function (doc, deterministic) {
  if (!deterministic || !doc || !doc._attachments) return stockRev(doc, deterministic);
  const atts = {};
  for (const [name, att] of Object.entries(doc._attachments)) {
    atts[name] = Buffer.isBuffer(att.data)
      ? Object.assign({}, att, { data: crypto.createHash('md5').update(att.data).digest('base64') })
      : att;
  }
  return stockRev(Object.assign({}, doc, { _attachments: atts }), deterministic);
};

const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-mapreduce'))
  .plugin(require('pouchdb-replication'));

const pouchApp = require('express-pouchdb')({
  inMemoryConfig: true,
  logPath: '/dev/null',
  // 2. 'compression' gzip-buffers continuous feeds; disk-size/fauxton/http-log
  // are useless for an in-memory test server.
  overrideMode: { exclude: ['compression', 'disk-size', 'routes/fauxton', 'routes/http-log'] },
});

// ---- sequences: CouchDB 3 uses opaque strings ------------------------------
const seqOut = (n) => `${n}-faxdtest`;
function seqIn(v) {
  if (v === undefined || v === null || v === '') return 0;
  if (v === 'now') return 'now';
  const m = /^\d+/.exec(String(v));
  return m ? parseInt(m[0], 10) : 0;
}
const outChange = (c) => Object.assign({}, c, { seq: seqOut(c.seq) });

// query values are JSON where possible (like express-pouchdb does)
function parseQuery(query) {
  const out = {};
  for (const [k, v] of Object.entries(query)) {
    try { out[k] = JSON.parse(v); } catch (e) { out[k] = v; }
  }
  return out;
}

const app = express();
app.enable('case sensitive routing');

app.use((req, res, next) => {
  // CouchDB 3 always answers application/json (express-pouchdb sends
  // text/plain unless the client asks for JSON).
  const accept = req.headers.accept;
  if (!accept || accept === '*/*') req.headers.accept = 'application/json, */*';
  // Admin party: any credentials are accepted (stock answers 401 for Basic
  // auth of a user that does not exist, e.g. http://admin:pass@host URLs).
  delete req.headers.authorization;
  next();
});

// Routes below serve /{db}/...; '/_all_dbs', '/_session' etc. go to express-pouchdb.
const isDb = (name) => !name.startsWith('_') || SYSTEM_DBS.includes(name);
function withDb(req, res, next) {
  if (!isDb(req.params.db)) return next('route');
  req.PouchDB = PouchDB;
  epUtils.setDBOnReq(req.params.db, pouchApp.dbWrapper, req, res, next);
}
function fail(res) {
  return (err) => { if (!res.headersSent) epUtils.sendError(res, err); else res.end(); };
}

// ---- 4. server info -------------------------------------------------------
const serverUuid = crypto.randomBytes(16).toString('hex');
app.get('/', (req, res) => epUtils.sendJSON(res, 200, {
  couchdb: 'Welcome',
  version: '3.3.3',
  git_sha: '40afbcfc7',
  uuid: serverUuid,
  features: ['access-ready', 'partitioned', 'pluggable-storage-engines', 'reshard', 'scheduler'],
  vendor: { name: 'faxd test server' },
}));
app.get('/_up', (req, res) => epUtils.sendJSON(res, 200, { status: 'ok', seeds: {} }));

// ---- 1. reject names CouchDB rejects ----------------------------------------
app.put('/:db', (req, res, next) => {
  const name = req.params.db;
  if (!DB_NAME.test(name) && !SYSTEM_DBS.includes(name)) {
    return epUtils.sendJSON(res, 400, {
      error: 'illegal_database_name',
      reason: `Name: '${name}'. Only lowercase characters (a-z), digits (0-9), and any of the ` +
        'characters _, $, (, ), +, -, and / are allowed. Must begin with a letter.',
    });
  }
  PouchDB.allDbs((err, dbs) => {
    if (err || !dbs.includes(name)) return next();
    epUtils.sendJSON(res, 412, {
      error: 'file_exists', reason: 'The database could not be created, the file already exists.',
    });
  });
});
// stock answers {"ok":true} when deleting a database that does not exist
app.delete('/:db', (req, res, next) => {
  if (['_session', '_db_updates', '_uuids'].includes(req.params.db) || req.query.rev) return next();
  PouchDB.allDbs((err, dbs) => {
    if (err || dbs.includes(req.params.db)) return next();
    epUtils.sendJSON(res, 404, { error: 'not_found', reason: 'Database does not exist.' });
  });
});

// ---- 5. database info -----------------------------------------------------
app.get('/:db', withDb, (req, res) => {
  Promise.all([req.db.info(), req.db.changes({ include_docs: true })]).then(([info, all]) => {
    let deleted = 0, external = 0;
    for (const c of all.results) {
      if (c.deleted) { deleted++; continue; }
      external += Buffer.byteLength(JSON.stringify(c.doc));
      for (const a of Object.values(c.doc._attachments || {})) external += a.length || 0;
    }
    epUtils.sendJSON(res, 200, {
      instance_start_time: '0',
      db_name: req.params.db,
      purge_seq: seqOut(0),
      update_seq: seqOut(info.update_seq),
      sizes: { file: external, external, active: external },
      props: {},
      doc_del_count: deleted,
      doc_count: info.doc_count,
      disk_format_version: 8,
      compact_running: false,
      cluster: { q: 2, n: 1, w: 1, r: 1 },
    });
  }, fail(res));
});

// ---- 3. _changes ----------------------------------------------------------
const MAX_TIMEOUT = 60000; // CouchDB's chttpd changes_timeout

function changes(req, res) {
  const q = parseQuery(req.query);
  const body = req.body || {};
  const feed = q.feed || 'normal';
  const limit = typeof q.limit === 'number' && q.limit > 0 ? q.limit : Infinity;
  const opts = Object.assign({}, q, { since: seqIn(q.since), query_params: q, return_docs: true });
  for (const k of ['feed', 'heartbeat', 'timeout', 'limit', 'seq_interval']) delete opts[k];
  if (body.doc_ids) opts.doc_ids = body.doc_ids;
  if (body.selector) opts.selector = body.selector;
  // CouchDB: with a heartbeat the feed never times out; otherwise it ends
  // after min(timeout, 60000) ms without changes.
  const heartbeat = q.heartbeat === true ? MAX_TIMEOUT : (typeof q.heartbeat === 'number' ? q.heartbeat : null);
  const timeout = heartbeat ? null : Math.min(typeof q.timeout === 'number' ? q.timeout : MAX_TIMEOUT, MAX_TIMEOUT);

  const first = Object.assign({}, opts);
  if (limit !== Infinity) first.limit = limit;
  req.db.info().then((info) => req.db.changes(first).then((resp) => {
    let results = resp.results;
    // CouchDB's last_seq covers changes skipped by a filter, PouchDB's does not.
    let lastSeq = results.length < limit && !opts.descending
      ? Math.max(resp.last_seq, info.update_seq) : resp.last_seq;
    const pending = () => (limit === Infinity || opts.descending ? Promise.resolve(0)
      : req.db.changes(Object.assign({}, opts, { since: lastSeq, return_docs: true }))
        .then((r) => r.results.length));
    epUtils.setJsonOrPlaintext(res);
    if (feed === 'normal' || (feed === 'longpoll' && (results.length || timeout === 0))) {
      return pending().then((p) => epUtils.sendJSON(res, 200,
        { results: results.map(outChange), last_seq: seqOut(lastSeq), pending: p }));
    }
    if (feed !== 'continuous' && feed !== 'longpoll') {
      return epUtils.sendJSON(res, 400, { error: 'bad_request', reason: `unsupported feed '${feed}'` });
    }

    res.status(200);
    res.flushHeaders();
    const longpoll = feed === 'longpoll';
    let count = 0, done = false, live = null, idle = null, beat = null;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(idle);
      clearInterval(beat);
      if (live) live.cancel();
      if (res.writableEnded || res.destroyed) return;
      if (longpoll) {
        res.end(JSON.stringify({ results: results.map(outChange), last_seq: seqOut(lastSeq), pending: 0 }) + '\n');
      } else {
        pending().then((p) => res.end(JSON.stringify({ last_seq: seqOut(lastSeq), pending: p }) + '\n'),
          () => res.end());
      }
    };
    const resetIdle = () => {
      clearTimeout(idle);
      if (timeout !== null) idle = setTimeout(finish, timeout);
    };
    const emit = (c) => {
      if (done) return;
      count++;
      lastSeq = c.seq;
      if (longpoll) { results = [c]; return finish(); }
      res.write(JSON.stringify(outChange(c)) + '\n');
      if (count >= limit) finish(); else resetIdle();
    };
    res.on('close', () => { done = true; clearTimeout(idle); clearInterval(beat); if (live) live.cancel(); });

    if (!longpoll) results.forEach(emit);
    if (done || timeout === 0) return finish();
    if (heartbeat) beat = setInterval(() => res.write('\n'), heartbeat);
    resetIdle();
    live = req.db.changes(Object.assign({}, opts, { since: lastSeq, live: true, return_docs: false }))
      .on('change', emit)
      .on('error', () => finish());
  })).catch(fail(res));
}
app.get('/:db/_changes', withDb, changes);
app.post('/:db/_changes', withDb, epUtils.jsonParser, changes);

// ---- 7. multi-query endpoints (CouchDB 2.2+, couch_rs query_many) -------------
app.post(['/:db/_all_docs/queries', '/:db/_design/:ddoc/_view/:view/queries'],
  withDb, epUtils.jsonParser, (req, res) => {
    const run = (q) => (req.params.view
      ? req.db.query(`${req.params.ddoc}/${req.params.view}`, Object.assign({}, q))
      : req.db.allDocs(Object.assign({}, q)));
    Promise.all(((req.body || {}).queries || []).map(run))
      .then((results) => epUtils.sendJSON(res, 200, { results }), fail(res));
  });

app.use(pouchApp);

// ---- start ----------------------------------------------------------------
process.on('unhandledRejection', (err) => console.error('unhandled rejection:', err));

pouchApp.setPouchDB(PouchDB).then(() => {
  const server = app.listen(Number(args.port), args.host, () => {
    const host = args.host.includes(':') ? `[${args.host}]` : args.host;
    const url = `http://${host}:${server.address().port}`;
    if (args['port-file']) {
      const tmp = `${args['port-file']}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, url);
      fs.renameSync(tmp, args['port-file']);
    }
    console.log(`listening ${url}`);
  });
  server.on('error', (err) => { console.error(err.message); process.exit(1); });
  const stop = () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
});
