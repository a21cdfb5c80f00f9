'use strict';
// Parse Server 9 peer for the pgbaas benchmark.
// Configured only from env vars:
//   PARSE_DATABASE_URI  postgres://user:pass@host:port/db   (postgis must already be created)
//   PARSE_PORT          HTTP port (listens on 127.0.0.1)
//   PARSE_APP_ID        application id  (X-Parse-Application-Id)
//   PARSE_MASTER_KEY    master key      (X-Parse-Master-Key)
//   PARSE_FILES_DIR     directory for the filesystem files adapter
//   PARSE_WORKERS       processes sharing the port (default: one per core, the usual
//                       way to run a Node server on a multi-core machine)
// Prints "parse-server ready on <port>" to stdout once every process listens.

// No winston file logs (default ./logs/ under the cwd, which would get one
// line per 404 in two files). Must be set before parse-server is required,
// because its module-level logger is created at require time.
process.env.PARSE_SERVER_LOGS_FOLDER = 'null';

const cluster = require('cluster');
const os = require('os');
const path = require('path');
const express = require('express');
const { ParseServer } = require('parse-server');
const FSFilesAdapter = require('@parse/fs-files-adapter');

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`missing env var ${name}`);
    process.exit(2);
  }
  return v;
}

const databaseURI = env('PARSE_DATABASE_URI');
const port = parseInt(env('PARSE_PORT'), 10);
const appId = env('PARSE_APP_ID');
const masterKey = env('PARSE_MASTER_KEY');
const filesDir = path.resolve(env('PARSE_FILES_DIR'));
const liveQueryClasses = (process.env.PARSE_LIVE_QUERY || '').split(',').filter(Boolean);

// The stock adapter always stores under "./files/<sub>" relative to the cwd;
// pin it to PARSE_FILES_DIR instead (it mkdirs the directory itself).
class DirFSFilesAdapter extends FSFilesAdapter {
  _getApplicationDir() {
    return filesDir;
  }
}

async function main() {
  const parse = new ParseServer({
    databaseURI,
    appId,
    masterKey,
    serverURL: `http://127.0.0.1:${port}/parse`,
    filesAdapter: new DirFSFilesAdapter(),
    allowClientClassCreation: false,
    startLiveQueryServer: false,
    // PARSE_LIVE_QUERY=Class,Class: LiveQuery for those classes, served on the same port
    // (createLiveQueryServer below; one process: without Redis a LiveQuery server only
    // hears its own process's saves). The differential test uses it; the benchmark not.
    ...(liveQueryClasses.length ? { liveQuery: { classNames: liveQueryClasses } } : {}),
    mountGraphQL: false,
    logLevel: 'error',
    silent: true,
    logsFolder: null,
    // The options below are set explicitly to their current (9.x) defaults
    // only to silence the ~15 startup DeprecationWarning lines on stderr.
    readOnlyMasterKeyIps: ['0.0.0.0/0', '::0'],
    protectedFieldsOwnerExempt: true,
    protectedFieldsTriggerExempt: false,
    protectedFieldsSaveResponseExempt: true,
    allowAggregationForReadOnlyMasterKey: true,
    fileUpload: { allowedFileUrlDomains: ['*'] },
    pages: { encodePageParamHeaders: false },
    installation: { duplicateDeviceTokenActionEnforceAuth: false },
    requestComplexity: {
      includeDepth: -1,
      includeCount: -1,
      subqueryDepth: -1,
      queryDepth: -1,
      graphQLDepth: -1,
      graphQLFields: -1,
      batchRequestLimit: -1,
    },
  });
  await parse.start(); // v9: must be awaited before mounting parse.app

  const app = express();
  app.disable('x-powered-by');
  app.use('/parse', parse.app);

  const server = await new Promise((resolve, reject) => {
    const s = app.listen(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
  if (liveQueryClasses.length) {
    await ParseServer.createLiveQueryServer(server);
  }
  if (process.send) {
    process.send('ready');
  } else {
    process.stdout.write(`parse-server ready on ${port}\n`);
  }

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    const hard = setTimeout(() => process.exit(0), 5000);
    hard.unref();
    // handleShutdown() closes parse.server (normally set by startApp) and the pg pool.
    parse.server = server;
    try {
      const done = parse.handleShutdown();
      server.closeAllConnections();
      await done;
    } catch (e) {
      console.error('shutdown error:', e && e.message);
    }
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

const workers = parseInt(process.env.PARSE_WORKERS || String(os.availableParallelism ? os.availableParallelism() : os.cpus().length), 10);

if (cluster.isPrimary && workers > 1) {
  // The primary only starts the workers, reports when all listen, and stops them.
  // One at a time: the first creates Parse's own tables in a fresh database, and
  // two doing that at once collide.
  let ready = 0;
  const next = () => {
    cluster.fork().on('message', m => {
      if (m !== 'ready') return;
      if (++ready === workers) {
        process.stdout.write(`parse-server ready on ${port} (${workers} processes)\n`);
      } else {
        next();
      }
    });
  };
  next();
  cluster.on('exit', (w, code) => {
    if (ready < workers && code !== 0) {
      console.error('a parse-server worker failed to start');
      process.exit(1);
    }
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
  });
  const stop = () => {
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 6000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  main().catch(err => {
    console.error('parse-server failed to start:', err && (err.stack || err));
    process.exit(1);
  });
}
