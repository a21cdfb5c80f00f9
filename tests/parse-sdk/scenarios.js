'use strict';
// Scenarios of the official Parse JavaScript SDK against a Parse server: pgbaas's Parse
// door (tests/tests/parse.rs), or Parse Server itself for the differential test. Each
// scenario checks what an app built on the SDK would see, with node:assert; a failure
// prints the scenario and exits 1. Prints one JSON line per scenario: {"ok": name, ...facts}
// so the Rust side can check facts against SQL (baas.as_user).
//
//   PARSE_SERVER_URL=http://127.0.0.1:PORT/parse PARSE_APP_ID=app PARSE_MASTER_KEY=key \
//   node scenarios.js [name ...]
const assert = require('node:assert/strict');
const Parse = require('parse/node');

const serverURL = process.env.PARSE_SERVER_URL;
const appId = process.env.PARSE_APP_ID;
const masterKey = process.env.PARSE_MASTER_KEY;
const run = process.env.PARSE_RUN || String(Date.now()); // names unique per run
// "parse-server" when the same scenarios run against Parse Server itself (the
// differential test): the few deliberate differences (docs/parse.md) are checked per peer.
const peer = process.env.PARSE_PEER || 'pgbaas';
Parse.initialize(appId, undefined, masterKey);
Parse.serverURL = serverURL;
Parse.User.enableUnsafeCurrentUser();

const GameScore = Parse.Object.extend('GameScore');

async function expectError(promise, code, what) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.code, code, `${what}: expected Parse error ${code}, got ${e.code} ${e.message}`);
    return e;
  }
  assert.fail(`${what}: expected Parse error ${code}, but it succeeded`);
}

async function signUp(name) {
  const u = new Parse.User();
  u.set('username', `${name}-${run}`);
  u.set('password', `pw-${name}-secret`);
  u.set('nick', name);
  await u.signUp();
  return u;
}


// Wait until `cond()` holds (events arrive on the LiveQuery socket).
async function until(cond, what, ms = 10000) {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > ms) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// A LiveQuery client of its own (the default one would carry the master key the
// scenarios initialise the SDK with), for `sessionToken` or anonymous.
function liveClient(sessionToken, extra = {}) {
  const c = new Parse.LiveQueryClient({
    applicationId: appId,
    serverURL: serverURL.replace(/^http/, 'ws'),
    sessionToken,
    ...extra,
  });
  c.on('error', () => {}); // the scenarios check errors where they expect them
  c.open();
  return c;
}

// Each event a subscription gets, as [event, objectId, score]; `leave` names only the
// object (pgbaas sends its id alone, docs/parse.md).
function record(sub) {
  const seen = [];
  for (const ev of ['create', 'enter', 'update', 'leave', 'delete']) {
    sub.on(ev, (o) => seen.push(ev === 'leave' ? [ev, o.id] : [ev, o.id, o.get('score')]));
  }
  return seen;
}

const scenarios = {
  // Sign-up, sign-in, the current user, sign-out: revocable session tokens.
  async users() {
    const alice = await signUp('alice');
    const first = alice.getSessionToken();
    assert.match(first, /^r:/);
    assert.ok(alice.id);
    assert.equal(alice.get('nick'), 'alice');
    const again = await Parse.User.logIn(`alice-${run}`, 'pw-alice-secret');
    assert.equal(again.id, alice.id);
    assert.notEqual(again.getSessionToken(), first, 'each sign-in is a session of its own');
    // As in Parse Server: a sign-in ends the user's earlier session from this installation.
    await expectError(Parse.User.me(first), 209, 'the session a later sign-in from the same installation replaced');
    const session = await Parse.Session.current();
    assert.equal(session.getSessionToken(), again.getSessionToken(), 'the current session is the sign-in\'s');
    assert.equal(session.get('user').id, alice.id);
    assert.ok(session.createdAt instanceof Date);
    const me = await Parse.User.me(again.getSessionToken());
    assert.equal(me.id, alice.id);
    assert.equal(me.get('username'), `alice-${run}`);
    assert.equal(me.get('nick'), 'alice');
    await expectError(Parse.User.logIn(`alice-${run}`, 'wrong password!'), 101, 'a wrong password');
    await expectError(Parse.User.logIn(`nobody-${run}`, 'wrong password!'), 101, 'an unknown user');
    await expectError(signUp('alice'), 202, 'a taken username');
    const token = again.getSessionToken();
    await Parse.User.logOut();
    await expectError(Parse.User.me(token), 209, 'a session token after logout');
    return { user: alice.id };
  },

  // Anonymous users (Parse.AnonymousUtils): an account without username or password
  // that works at once, signs in again with its authData, and signs up keeping its id,
  // its objects and its session.
  // Sign in with Apple, link and unlink Google: the ID tokens come from the test kit's
  // key server (PARSE_OIDC_TOKENS), verified by pgbaas in Postgres.
  async authData() {
    const t = JSON.parse(process.env.PARSE_OIDC_TOKENS);
    await Parse.User.logOut();
    const user = await Parse.User.logInWith('apple', { authData: t.apple[0] });
    assert.ok(user.id && user.getSessionToken().startsWith('r:'), 'a new user with a session');
    assert.ok(user._isLinked('apple'));
    assert.equal(Parse.User.current().id, user.id);
    const me = await Parse.User.me(user.getSessionToken());
    assert.deepEqual(me.get('authData'), { apple: { id: t.apple[0].id } }, 'the server shows the provider\'s id, no token');
    await user.linkWith('google', { authData: t.google });
    assert.ok(user._isLinked('google'));
    assert.deepEqual(Object.keys((await Parse.User.me(user.getSessionToken())).get('authData')).sort(), ['apple', 'google']);
    await user._unlinkFrom('google');
    assert.ok(!user._isLinked('google'));
    assert.deepEqual((await Parse.User.me(user.getSessionToken())).get('authData'), { apple: { id: t.apple[0].id } });
    // Signed out and in again with Apple: the same user.
    await Parse.User.logOut();
    const again = await Parse.User.logInWith('apple', { authData: t.apple[1] });
    assert.equal(again.id, user.id);
    // A token used already signs nobody in.
    await Parse.User.logOut();
    await expectError(Parse.User.logInWith('apple', { authData: t.apple[1] }), 101, 'a used token');
    return { user: user.id };
  },

  async anonymous() {
    await Parse.User.logOut();
    const anon = await Parse.AnonymousUtils.logIn();
    assert.ok(anon.id && anon.getSessionToken(), 'an anonymous user with a session');
    assert.ok(Parse.AnonymousUtils.isLinked(anon));
    const mine = new GameScore({ name: `anon-${run}` });
    mine.setACL(new Parse.ACL(anon));
    await mine.save();
    const authData = anon.get('authData').anonymous;
    assert.ok(authData && authData.id, 'the user holds its anonymous id');
    const me = await Parse.User.me(anon.getSessionToken());
    assert.deepEqual(me.get('authData'), { anonymous: authData }, 'the server shows the user its authData');
    await Parse.User.logOut();
    const again = await Parse.User.logInWith('anonymous', { authData });
    assert.equal(again.id, anon.id, 'the same authData signs in as the same user');
    assert.equal((await new Parse.Query(GameScore).get(mine.id)).get('name'), `anon-${run}`);
    // signUp: the anonymous user becomes a full one, keeping its id and objects.
    again.setUsername(`anon-${run}`);
    again.setPassword('anon-secret-pw');
    await again.signUp();
    assert.equal(again.id, anon.id);
    assert.equal((await new Parse.Query(GameScore).get(mine.id)).get('name'), `anon-${run}`, 'its objects stay its own');
    await Parse.User.logOut();
    const back = await Parse.User.logIn(`anon-${run}`, 'anon-secret-pw');
    assert.equal(back.id, anon.id, 'it signs in with its new username and password');
    assert.ok(!(back.get('authData') || {}).anonymous, 'and is no longer anonymous');
    // The old anonymous id now makes a new account.
    await Parse.User.logOut();
    const fresh = await Parse.User.logInWith('anonymous', { authData });
    assert.notEqual(fresh.id, anon.id);
    await expectError(new Parse.Query(GameScore).get(mine.id), 101, 'another anonymous user cannot read it');
    // One more, with an id the import check knows, that stays anonymous.
    await Parse.User.logOut();
    const kept = await Parse.User.logInWith('anonymous', { authData: { id: `keep-${run}` } });
    kept.set('nick', 'kept');
    await kept.save();
    await Parse.User.logOut();
    return { user: anon.id, fresh: fresh.id };
  },

  // user.destroy(): a user deletes its own account; not another's.
  async userDelete() {
    const carol = await signUp('del-carol');
    const dave = await signUp('del-dave'); // the current user
    const carolAsDave = Parse.User.createWithoutData(carol.id);
    await expectError(carolAsDave.destroy({ sessionToken: dave.getSessionToken() }), 206, 'deleting another user\'s account');
    const token = dave.getSessionToken();
    await dave.destroy({ sessionToken: token });
    await expectError(Parse.User.logIn(`del-dave-${run}`, 'pw-del-dave-secret'), 101, 'signing in to a deleted account');
    await expectError(Parse.User.me(token), 209, 'the deleted account\'s session');
    const stillThere = await Parse.User.logIn(`del-carol-${run}`, 'pw-del-carol-secret');
    assert.equal(stillThere.id, carol.id);
    await Parse.User.logOut();
    return {};
  },

  // user.save(): a user changes its own fields and username.
  async userSave() {
    const u = await signUp('save');
    u.set('nick', 'changed');
    u.increment('visits');
    await u.save();
    u.increment('visits', 2);
    await u.save();
    const me = await Parse.User.me(u.getSessionToken());
    assert.equal(me.get('nick'), 'changed');
    assert.equal(me.get('visits'), 3);
    u.setUsername(`saved-${run}`);
    await u.save();
    const again = await Parse.User.logIn(`saved-${run}`, 'pw-save-secret');
    assert.equal(again.id, u.id);
    await expectError(Parse.User.logIn(`save-${run}`, 'pw-save-secret'), 101, 'the old username');
    await Parse.User.logOut();
    return { user: u.id };
  },

  // Objects: create, fetch, update with every field operation, delete.
  async objects() {
    const u = await signUp('objects');
    const s = new GameScore();
    s.set({ score: 1337, playerName: 'Sean Plott', cheatMode: false, tags: ['a'], when: new Date('2026-01-02T03:04:05.678Z'),
            nested: { level: 3 } });
    await s.save();
    assert.ok(s.id);
    assert.ok(s.createdAt instanceof Date);
    const got = await new Parse.Query(GameScore).get(s.id);
    assert.equal(got.get('score'), 1337);
    assert.equal(got.get('playerName'), 'Sean Plott');
    assert.equal(got.get('cheatMode'), false);
    assert.deepEqual(got.get('tags'), ['a']);
    assert.deepEqual(got.get('nested'), { level: 3 });
    assert.equal(got.get('when').toISOString(), '2026-01-02T03:04:05.678Z', 'a Date comes back as a Date');
    assert.equal(got.createdAt.getTime(), s.createdAt.getTime());
    got.increment('score', 5);
    got.addUnique('tags', 'b');
    got.addUnique('tags', 'a');
    await got.save();
    assert.equal(got.get('score'), 1342);
    got.add('tags', 'c');
    got.unset('cheatMode');
    await got.save();
    got.remove('tags', 'a');
    got.set('playerName', 'Sean');
    await got.save();
    const after = await new Parse.Query(GameScore).get(s.id);
    assert.equal(after.get('score'), 1342);
    assert.deepEqual(after.get('tags'), ['b', 'c']);
    assert.equal(after.get('cheatMode'), undefined);
    assert.equal(after.get('playerName'), 'Sean');
    assert.ok(after.updatedAt > after.createdAt);
    await after.destroy();
    await expectError(new Parse.Query(GameScore).get(s.id), 101, 'a deleted object');
    return { user: u.id };
  },

  // Subqueries: matchesQuery ($inQuery), doesNotMatchQuery ($notInQuery),
  // matchesKeyInQuery ($select), doesNotMatchKeyInQuery ($dontSelect).
  async subqueries() {
    await Parse.User.logOut();
    const tag = `sub-${run}`;
    const g = [1, 2, 3].map((n) => new GameScore({ tag, n, city: ['Oslo', 'Rome', 'Oslo'][n - 1] }));
    await Parse.Object.saveAll(g);
    const Post = Parse.Object.extend('Post');
    const posts = ['a', 'b', 'c'].map((title, i) => new Post({ tag, title, score: g[i], city: ['Oslo', 'Rome', 'Paris'][i] }));
    await Parse.Object.saveAll(posts);
    const scores = () => new Parse.Query(GameScore).equalTo('tag', tag);
    const titles = async (q) => (await q.equalTo('tag', tag).find()).map((p) => p.get('title')).sort();
    assert.deepEqual(await titles(new Parse.Query(Post).matchesQuery('score', scores().equalTo('city', 'Oslo'))), ['a', 'c']);
    assert.deepEqual(await titles(new Parse.Query(Post).doesNotMatchQuery('score', scores().equalTo('city', 'Oslo'))), ['b']);
    assert.deepEqual(await titles(new Parse.Query(Post).matchesKeyInQuery('city', 'city', scores().lessThanOrEqualTo('n', 2))), ['a', 'b']);
    assert.deepEqual(await titles(new Parse.Query(Post).doesNotMatchKeyInQuery('city', 'city', scores())), ['c']);
    // A subquery sees only what the caller may read: a private score in Berlin does not
    // make posts about it or about Berlin match for others.
    const owner = await signUp('sub-owner');
    const secret = new GameScore({ tag, n: 9, city: 'Berlin' });
    secret.setACL(new Parse.ACL(owner));
    await secret.save();
    const d = new Post({ tag, title: 'd', score: secret, city: 'Berlin' });
    await d.save();
    assert.deepEqual(await titles(new Parse.Query(Post).matchesKeyInQuery('city', 'city', scores())), ['a', 'b', 'd'], 'the owner sees its Berlin');
    await Parse.User.logOut();
    assert.deepEqual(await titles(new Parse.Query(Post).matchesQuery('score', scores().greaterThan('n', 2))), ['c']);
    assert.deepEqual(await titles(new Parse.Query(Post).matchesKeyInQuery('city', 'city', scores())), ['a', 'b']);
    return {};
  },

  // LiveQuery: the SDK's subscriptions get Parse's events (create, enter, update, leave,
  // delete) for what their session may read and their query matches.
  async liveQuery() {
    const bob = await signUp('lq-bob');
    const alice = await signUp('lq-alice'); // the current user: the saves below are hers
    const tag = `lq-${run}`;
    const query = () => new Parse.Query(GameScore).equalTo('tag', tag).greaterThan('score', 10);
    const clients = [liveClient(alice.getSessionToken()), liveClient(bob.getSessionToken()), liveClient(undefined)];
    const [aliceLive, bobLive, anonLive] = clients;
    const subs = [aliceLive.subscribe(query(), alice.getSessionToken()), bobLive.subscribe(query()), anonLive.subscribe(query())];
    await Promise.all(subs.map((s) => s.subscribePromise));
    const [a, b, n] = subs.map(record);
    if (peer === 'pgbaas') {
      // One caller per connection: the anonymous one cannot become alice's.
      const late = anonLive.subscribe(query(), alice.getSessionToken());
      await expectError(late.subscribePromise, 209, 'a session token on a connection that subscribed anonymously');
    }
    const mine = new Parse.ACL(alice);
    // Alice's own object: only her subscription hears of it.
    const o1 = new GameScore({ tag, score: 20 });
    o1.setACL(mine);
    await o1.save();
    // A public object that does not match yet, then matches, changes, becomes hers alone,
    // stops matching.
    const o2 = await new GameScore({ tag, score: 5 }).save();
    await o2.save({ score: 15 });
    await o2.save({ score: 16 });
    o2.setACL(mine);
    await o2.save();
    await o2.save({ score: 3 });
    await o1.destroy();
    await until(() => a.length >= 6, 'alice\'s six events');
    await until(() => b.length >= 3 && n.length >= 3, 'the others\' three events');
    await new Promise((r) => setTimeout(r, 300)); // nothing more comes
    assert.deepEqual(a, [
      ['create', o1.id, 20], ['enter', o2.id, 15], ['update', o2.id, 16],
      ['update', o2.id, 16], ['leave', o2.id], ['delete', o1.id, 20],
    ]);
    const others = [['enter', o2.id, 15], ['update', o2.id, 16], ['leave', o2.id]];
    assert.deepEqual(b, others, 'bob never hears of alice\'s own object');
    assert.deepEqual(n, others, 'nor does an anonymous client');

    // One object by its id; only the fields asked for.
    const o3 = await new GameScore({ tag, score: 30, name: 'third' }).save();
    const byId = aliceLive.subscribe(new Parse.Query(GameScore).equalTo('objectId', o3.id).select('score'), alice.getSessionToken());
    await byId.subscribePromise;
    const got = [];
    byId.on('update', (o) => got.push([o.id, o.get('score'), o.get('name')]));
    await new GameScore({ tag, score: 40 }).save();
    await o3.save({ score: 31 });
    await until(() => got.length >= 1, 'the update of the object subscribed by id');
    assert.deepEqual(got, [[o3.id, 31, undefined]]);

    // watch: creates and updates only when a watched field changed (as Parse Server's).
    const watched = aliceLive.subscribe(new Parse.Query(GameScore).equalTo('tag', `${tag}-w`).watch('score'), alice.getSessionToken());
    await watched.subscribePromise;
    const w = record(watched);
    const o4 = await new GameScore({ tag: `${tag}-w`, name: 'no score yet' }).save();
    await o4.save({ name: 'renamed' });
    await o4.save({ score: 1 });
    await o4.save({ name: 'renamed again' });
    await o4.save({ score: 2 });
    await o4.destroy();
    await until(() => w.length >= 3, 'the watched subscription\'s events');
    await new Promise((r) => setTimeout(r, 300)); // nothing more comes
    assert.deepEqual(w, [['update', o4.id, 1], ['update', o4.id, 2], ['delete', o4.id, 2]]);
    await aliceLive.unsubscribe(watched);

    // A regular expression: the feed's evaluator answers as the query would.
    const re = aliceLive.subscribe(new Parse.Query(GameScore).equalTo('tag', `${tag}-re`).matches('name', /^ab+c$/i), alice.getSessionToken());
    await re.subscribePromise;
    const r = record(re);
    const m1 = await new GameScore({ tag: `${tag}-re`, name: 'ABBC', score: 1 }).save();
    const m2 = await new GameScore({ tag: `${tag}-re`, name: 'abd', score: 2 }).save();
    await m2.save({ name: 'abc', score: 3 });
    await m2.save({ name: 'abc\nx', score: 4 });
    await m1.save({ score: 5 });
    await until(() => r.length >= 4, 'the pattern subscription\'s events');
    await new Promise((res) => setTimeout(res, 300)); // nothing more comes
    assert.deepEqual(r, [['create', m1.id, 1], ['enter', m2.id, 3], ['leave', m2.id], ['update', m1.id, 5]]);
    assert.deepEqual((await new Parse.Query(GameScore).equalTo('tag', `${tag}-re`).matches('name', /^ab+c$/i).find()).map((o) => o.id), [m1.id]);
    await aliceLive.unsubscribe(re);

    // Unsubscribe: no more events.
    await aliceLive.unsubscribe(byId);
    await o3.save({ score: 32 });
    await until(() => a.length >= 10, 'alice\'s query subscription still hears');
    assert.equal(got.length, 1, 'nothing after unsubscribe');

    // The master key reads what no user may. (Parse Server's LiveQuery honours it only
    // when its keyPairs name the master key, and then refuses clients without a key.)
    const masterLive = liveClient(undefined, { masterKey });
    if (peer === 'pgbaas') {
      const ms = masterLive.subscribe(query());
      await ms.subscribePromise;
      const seenByMaster = record(ms);
      const secret = new GameScore({ tag, score: 50 });
      secret.setACL(new Parse.ACL());
      await secret.save(null, { useMasterKey: true });
      await until(() => seenByMaster.length >= 1, 'the master key\'s event');
      assert.deepEqual(seenByMaster, [['create', secret.id, 50]]);
    }

    // A wrong application id is refused at connect (Parse Server's LiveQuery checks only
    // the keys of its keyPairs, none here).
    const wrong = new Parse.LiveQueryClient({ applicationId: 'not-the-app', serverURL: serverURL.replace(/^http/, 'ws') });
    if (peer === 'pgbaas') {
      const refused = new Promise((resolve) => wrong.on('error', resolve));
      wrong.connectPromise.catch(() => {}); // rejected with the error: nothing was waiting on it
      wrong.open();
      assert.equal(await refused, 'Key in request is not valid');
    }

    // Bob signs out: his LiveQuery session ends with it.
    const bobEnded = new Promise((resolve) => bobLive.on('error', resolve));
    await Parse.User.become(bob.getSessionToken());
    await Parse.User.logOut();
    let timer;
    const why = await Promise.race([bobEnded, new Promise((r) => { timer = setTimeout(() => r('still open'), 10000); })]);
    clearTimeout(timer);
    if (peer === 'pgbaas') {
      assert.match(String(why), /session/i, 'a signed-out session\'s LiveQuery ends');
      // Its socket stays open for the app to close: a close would make the SDK reconnect
      // with the dead session.
      let closed = false;
      bobLive.on('close', () => { closed = true; });
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok(!closed, 'the server leaves the ended connection open');
    }

    await Promise.all([...clients, masterLive, wrong].map((c) => c.close()));
    return { alice: alice.id, events: a.length };
  },

  // Files: Parse.File saved by a signed-in user, served at its URL, kept on an object.
  async files() {
    await signUp('files-erin'); // the current user
    const text = `hello, parse ${run}`;
    const file = new Parse.File('hello.txt', { base64: Buffer.from(text).toString('base64') }, 'text/plain');
    await file.save();
    assert.match(file.name(), /_hello\.txt$/);
    assert.ok(file.url().startsWith(`${serverURL}/files/`), file.url());
    const got = await fetch(file.url());
    assert.equal(got.status, 200);
    assert.match(got.headers.get('content-type'), /^text\/plain/, 'the type the SDK declared');
    assert.equal(await got.text(), text);
    const o = await new GameScore({ tag: `files-${run}`, attachment: file }).save();
    const back = (await new Parse.Query(GameScore).get(o.id)).get('attachment');
    assert.ok(back instanceof Parse.File);
    assert.equal(back.name(), file.name());
    assert.equal(back.url(), file.url());
    assert.equal(Buffer.from(await back.getData(), 'base64').toString(), text);
    await expectError(new Parse.File('bad*name.txt', { base64: 'aGk=' }).save(), 122, 'a file name Parse refuses');
    await Parse.User.logOut();
    await expectError(new Parse.File('anon.txt', { base64: 'aGk=' }).save(), 130, 'an upload without a session');
    return { file: file.name() };
  },

  // Relations: add, remove, relation.query() ($relatedTo), and equalTo on the relation.
  async relations() {
    await Parse.User.logOut();
    const tag = `rel-${run}`;
    const [a, b, c] = [1, 2, 3].map((n) => new GameScore({ tag, n }));
    await Parse.Object.saveAll([a, b, c]);
    const Post = Parse.Object.extend('Post');
    const p = new Post({ tag, title: 'rel' });
    p.relation('likes').add([a, b]);
    await p.save();
    const ns = async (q) => (await q.find()).map((o) => o.get('n')).sort();
    assert.deepEqual(await ns(p.relation('likes').query()), [1, 2]);
    // Remove and add in one save (the SDK sends one Batch operation).
    p.relation('likes').remove(a);
    p.relation('likes').add(c);
    await p.save();
    const fetched = await new Parse.Query(Post).get(p.id);
    assert.ok(fetched.get('likes') instanceof Parse.Relation, 'a relation field reads as a Relation');
    assert.deepEqual(await ns(fetched.relation('likes').query()), [2, 3]);
    assert.deepEqual(await ns(fetched.relation('likes').query().greaterThan('n', 2)), [3]);
    // Whoever may not write the object may not change its relation.
    const owner = await signUp('rel-owner');
    const mine = new Post({ tag, title: 'private' });
    const acl = new Parse.ACL(owner);
    acl.setPublicReadAccess(true);
    mine.setACL(acl);
    mine.relation('likes').add(a);
    await mine.save();
    await signUp('rel-other');
    const theirs = await new Parse.Query(Post).get(mine.id);
    theirs.relation('likes').add(b);
    await expectError(theirs.save(), 101, 'adding to a relation of an object one may not write');
    assert.deepEqual(await ns(theirs.relation('likes').query()), [1]);
    await Parse.User.logOut();
    return {};
  },

  // Batches with transaction: true: all or none.
  async transactions() {
    const tag = `tx-${run}`;
    const count = (n) => new Parse.Query(GameScore).equalTo('tag', tag).equalTo('n', n).count();
    await Parse.Object.saveAll([new GameScore({ tag, n: 1 }), new GameScore({ tag, n: 2 })], { transaction: true });
    assert.equal(await new Parse.Query(GameScore).equalTo('tag', tag).count(), 2);
    const owner = await signUp('tx-owner');
    const locked = new GameScore({ tag, n: 3 });
    locked.setACL(new Parse.ACL(owner));
    await locked.save();
    await signUp('tx-other');
    locked.set('n', 30);
    const fresh = new GameScore({ tag, n: 4 });
    const e = await Parse.Object.saveAll([fresh, locked], { transaction: true }).then(() => null, (err) => err);
    assert.ok(e, 'a batch with an operation the ACL refuses fails');
    assert.equal(await count(4), 0, 'and the operation before it did not happen');
    await Parse.User.logOut();
    return {};
  },

  // ACLs: set through the SDK, enforced for each user; the Rust side checks the same
  // object with baas.as_user in SQL.
  async acls() {
    const bob = await signUp('bob');
    const carol = await signUp('carol');
    const alice = await signUp('acl-alice');
    const s = new GameScore();
    const acl = new Parse.ACL(alice);
    acl.setReadAccess(bob, true);
    s.setACL(acl);
    s.set({ score: 1, owner: 'alice' });
    await s.save();
    const shown = (await new Parse.Query(GameScore).get(s.id)).getACL();
    assert.equal(shown.getReadAccess(alice), true);
    assert.equal(shown.getWriteAccess(alice), true);
    assert.equal(shown.getReadAccess(bob), true);
    assert.equal(shown.getWriteAccess(bob), false);
    assert.equal(shown.getPublicReadAccess(), false);
    await Parse.User.become(bob.getSessionToken());
    const bobs = await new Parse.Query(GameScore).get(s.id);
    assert.equal(bobs.get('score'), 1);
    bobs.set('score', 2);
    await expectError(bobs.save(), 101, 'bob writes an object he may only read');
    const again = await new Parse.Query(GameScore).get(s.id);
    again.setACL(new Parse.ACL(bob));
    // pgbaas: only the owner (or the master key) changes an ACL (docs/parse.md).
    await expectError(again.save(), peer === 'pgbaas' ? 119 : 101, 'bob changes the ACL of an object he may only read');
    await Parse.User.become(carol.getSessionToken());
    await expectError(new Parse.Query(GameScore).get(s.id), 101, 'carol reads an object she may not');
    const carolSees = await new Parse.Query(GameScore).equalTo('owner', 'alice').find();
    assert.equal(carolSees.filter((o) => o.id === s.id).length, 0, 'a query does not show it to carol either');
    // Anonymous: dave signs in and out, leaving no current user.
    await signUp('dave');
    await Parse.User.logOut();
    await expectError(new Parse.Query(GameScore).get(s.id), 101, 'an anonymous caller');
    // The master key reads and writes everything, as in Parse Server.
    const m = await new Parse.Query(GameScore).get(s.id, { useMasterKey: true });
    m.set('score', 3);
    await m.save(null, { useMasterKey: true });
    // Public read, set later by alice.
    await Parse.User.become(alice.getSessionToken());
    const mine = await new Parse.Query(GameScore).get(s.id);
    assert.equal(mine.get('score'), 3);
    const open = new Parse.ACL(alice);
    open.setPublicReadAccess(true);
    mine.setACL(open);
    await mine.save();
    await Parse.User.become(carol.getSessionToken());
    assert.equal((await new Parse.Query(GameScore).get(s.id)).get('score'), 3);
    return { object: s.id, alice: alice.id, bob: bob.id, carol: carol.id };
  },

  // Queries: every supported constraint, order, limit, skip, keys, count.
  async queries() {
    await Parse.User.logOut();
    const tag = `q-${run}`;
    const objs = [];
    for (let i = 0; i < 10; i++) {
      const o = new GameScore();
      o.set({ tag, n: i, name: `p${i % 3}`, even: i % 2 === 0, list: [i, i + 1], at: new Date(Date.UTC(2026, 0, 1 + i)) });
      if (i === 9) o.unset('name');
      const labels = ['Apple Pie', 'apple.tart', 'Banana (split)', 'Pineapple', 'APPLE', 'crab apple', 'a\\Eb', 'Ünïcode apple', 'PineAPPLE pie'];
      if (i < 9) o.set('label', labels[i]);
      objs.push(o);
    }
    await Parse.Object.saveAll(objs);
    const q = () => new Parse.Query(GameScore).equalTo('tag', tag);
    const ns = async (query) => (await query.find()).map((o) => o.get('n')).sort((a, b) => a - b);
    assert.deepEqual(await ns(q().lessThan('n', 3)), [0, 1, 2]);
    assert.deepEqual(await ns(q().greaterThanOrEqualTo('n', 8)), [8, 9]);
    assert.deepEqual(await ns(q().lessThanOrEqualTo('n', 1)), [0, 1]);
    assert.deepEqual(await ns(q().greaterThan('n', 7).lessThan('n', 9)), [8]);
    assert.deepEqual(await ns(q().notEqualTo('name', 'p0')), [1, 2, 4, 5, 7, 8, 9]);
    assert.deepEqual(await ns(q().containedIn('n', [1, 5, 42])), [1, 5]);
    assert.deepEqual(await ns(q().notContainedIn('n', [0, 1, 2, 3, 4, 5, 6])), [7, 8, 9]);
    assert.deepEqual(await ns(q().doesNotExist('name')), [9]);
    assert.deepEqual((await ns(q().exists('name'))).length, 9);
    assert.deepEqual(await ns(q().equalTo('even', true).lessThan('n', 5)), [0, 2, 4]);
    assert.deepEqual(await ns(q().containsAll('list', [4, 5])), [4]);
    assert.deepEqual(await ns(q().containedBy('list', [0, 1, 2, 3])), [0, 1, 2], 'containedBy: every element in the list');
    assert.deepEqual(await ns(q().greaterThan('at', new Date(Date.UTC(2026, 0, 8)))), [8, 9], 'Dates compare as times');
    assert.deepEqual(await ns(Parse.Query.or(q().equalTo('n', 1), q().equalTo('n', 6))), [1, 6]);
    assert.deepEqual(await ns(Parse.Query.and(q().greaterThan('n', 1), q().lessThan('n', 4))), [2, 3]);
    assert.deepEqual(await ns(Parse.Query.nor(q().lessThan('n', 8)).equalTo('tag', tag)), [8, 9]);
    const ordered = await q().descending('n').limit(3).skip(1).find();
    assert.deepEqual(ordered.map((o) => o.get('n')), [8, 7, 6]);
    const byName = await q().ascending('name').addDescending('n').limit(4).find();
    assert.deepEqual(byName.map((o) => o.get('n')), [6, 3, 0, 7]);
    const picked = await q().equalTo('n', 2).select('name').first();
    assert.equal(picked.get('name'), 'p2');
    assert.equal(picked.get('n'), undefined, 'select leaves out other keys');
    assert.ok(picked.id && picked.createdAt);
    // each() pages by objectId (objectId > the last one seen), 3 at a time here.
    const seen = [];
    await q().each((o) => { seen.push(o.get('n')); }, { batchSize: 3 });
    assert.deepEqual(seen.sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(await q().count(), 10);
    assert.equal(await q().greaterThan('n', 4).count(), 5);
    // notEqualTo / notContainedIn on objectId ("everything but these"), paged and counted.
    assert.deepEqual(await ns(q().notEqualTo('objectId', objs[3].id)), [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(await ns(q().notContainedIn('objectId', [objs[0].id, objs[9].id, 'nosuchid'])), [1, 2, 3, 4, 5, 6, 7, 8]);
    const rest = await q().notContainedIn('objectId', [objs[1].id, objs[2].id]).ascending('n').skip(1).limit(3).find();
    assert.deepEqual(rest.map((o) => o.get('n')), [3, 4, 5]);
    assert.equal(await q().notContainedIn('objectId', [objs[1].id, objs[2].id]).greaterThan('n', 1).count(), 7);
    assert.equal(await q().notEqualTo('objectId', objs[8].id).lessThan('n', 5).count(), 5);
    const allBut0 = [];
    await q().notContainedIn('objectId', [objs[0].id]).each((o) => { allBut0.push(o.get('n')); }, { batchSize: 3 });
    assert.deepEqual(allBut0.sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9], 'each() pages past the ids left out');
    assert.deepEqual(await ns(q().notEqualTo('objectId', objs[3].id).exclude('objectId').lessThan('n', 5)), [0, 1, 2, 4], 'objectId is always selected');
    const created = await q().ascending('createdAt').limit(1).find();
    assert.equal(created.length, 1);
    await expectError(new Parse.Query('NeverWrittenClass').find(), 119, 'a class that does not exist, without the master key');
    const none = await new Parse.Query('NeverWrittenClass').find({ useMasterKey: true });
    assert.deepEqual(none, [], 'a class that does not exist lists nothing for the master key');
    // Text: the SDK's startsWith, endsWith and contains quote their text (\\Q…\\E), so
    // "." or "(" are themselves; matches with a literal pattern, with or without "i".
    assert.deepEqual(await ns(q().startsWith('label', 'Apple')), [0], 'startsWith is case-sensitive');
    assert.deepEqual(await ns(q().startsWith('label', 'Ün')), [7]);
    assert.deepEqual(await ns(q().endsWith('label', 'apple')), [3, 5, 7]);
    assert.deepEqual(await ns(q().contains('label', 'apple')), [1, 3, 5, 7]);
    assert.deepEqual(await ns(q().contains('label', '.')), [1], 'a quoted "." is a dot');
    assert.deepEqual(await ns(q().contains('label', '(split)')), [2]);
    // Parse Server 9 on Postgres misreads the SDK's escape of a "\\E" inside the text
    // and finds nothing (docs/parse.md).
    assert.deepEqual(await ns(q().contains('label', 'a\\Eb')), peer === 'pgbaas' ? [6] : [], 'a quoted \\E');
    assert.deepEqual(await ns(q().matches('label', /^apple/i)), [0, 1, 4]);
    assert.deepEqual(await ns(q().matches('label', 'apple', 'i')), [0, 1, 3, 4, 5, 7, 8]);
    assert.deepEqual(await ns(q().matches('label', /^APPLE$/)), [4]);
    assert.deepEqual(await ns(q().matches('label', 'tart$').notEqualTo('n', 3)), [1]);
    // createdAt/updatedAt compare as the SDK holds them (to the millisecond): the
    // pivot equals its own createdAt and is not after it.
    const byTime = await q().ascending('createdAt').find();
    const pivot = byTime[4].createdAt;
    const idsOf = async (query) => (await query.find()).map((o) => o.id).sort();
    const want = (keep) => byTime.filter((o) => keep(o.createdAt.getTime(), pivot.getTime())).map((o) => o.id).sort();
    assert.deepEqual(await idsOf(q().greaterThan('createdAt', pivot)), want((t, p) => t > p));
    assert.deepEqual(await idsOf(q().lessThanOrEqualTo('createdAt', pivot)), want((t, p) => t <= p));
    assert.deepEqual(await idsOf(q().equalTo('createdAt', pivot)), want((t, p) => t === p));
    assert.ok((await idsOf(q().equalTo('createdAt', pivot))).includes(byTime[4].id));
    const two = [byTime[1].createdAt, byTime[6].createdAt];
    if (peer === 'pgbaas') {
      assert.deepEqual(await idsOf(q().containedIn('createdAt', [])), []);
      assert.deepEqual(await idsOf(q().containedIn('createdAt', two)), want((t) => two.some((d) => d.getTime() === t)));
      assert.deepEqual(await idsOf(q().notContainedIn('createdAt', two)), want((t) => !two.some((d) => d.getTime() === t)));
    } else {
      await expectError(q().containedIn('createdAt', two).find(), 1, 'Parse Server 9 on Postgres: an internal error');
      await expectError(q().notContainedIn('createdAt', two).find(), 1, 'Parse Server 9 on Postgres: an internal error');
    }
    if (peer === 'pgbaas') {
      assert.deepEqual(await idsOf(q().notEqualTo('createdAt', pivot)), want((t, p) => t !== p));
    } else {
      await expectError(q().notEqualTo('createdAt', pivot).find(), 1, 'Parse Server 9 on Postgres: an internal error');
    }
    // The sync pattern: what changed since the last change seen.
    const last = new Date(Math.max(...byTime.map((o) => o.updatedAt.getTime())));
    await new Promise((r) => setTimeout(r, 5));
    const touched = byTime[2];
    touched.set('touched', true);
    await touched.save();
    assert.deepEqual(await idsOf(q().greaterThan('updatedAt', last)), [touched.id]);
    assert.deepEqual(await idsOf(q().greaterThan('updatedAt', touched.updatedAt)), []);
    // Regular expressions: both peers run Postgres's; pgbaas takes what its live feeds
    // answer alike (no back-references, look-around or word boundaries: 102).
    assert.deepEqual(await ns(q().matches('name', 'p[01]')), [0, 1, 3, 4, 6, 7]);
    assert.deepEqual(await ns(q().matches('label', '^(apple|pine)', 'i')), [0, 1, 3, 4, 8]);
    assert.deepEqual(await ns(q().matches('label', /\(\w+\)$/)), [2]);
    assert.deepEqual(await ns(q().matches('label', /^[A-Z]+$/)), [4]);
    assert.deepEqual(await ns(q().matches('label', /e\s+p/i)), [0, 8]);
    assert.deepEqual(await ns(q().matches('label', 'a.?p{2}l[aeiou]').notEqualTo('n', 0)), [1, 3, 5, 7]);
    assert.deepEqual(await ns(q().matches('label', /^\d/)), []);
    assert.deepEqual(await ns(q().matches('label', /apple$/i).notEqualTo('n', 3)), [4, 5, 7]);
    // The x option takes whitespace and comments out, as Parse Server does; m makes ^ and
    // $ match at each line (Parse Server on Postgres ignores m: its ^ is the text's start).
    assert.deepEqual(await ns(q().matches('label', '^ apple  # the fruit', 'ix')), [0, 1, 4]);
    const lines = `${tag}-lines`;
    const [l1, l2] = await Parse.Object.saveAll([new GameScore({ tag: lines, text: 'first line\nsecond line' }), new GameScore({ tag: lines, text: 'second line' })]);
    const lq = (re, mods) => new Parse.Query(GameScore).equalTo('tag', lines).matches('text', re, mods).find().then((r) => r.map((o) => o.id).sort());
    // (Saved in one batch: their createdAt may be the same millisecond, so ids sorted.)
    const both = [l1.id, l2.id].sort();
    assert.deepEqual(await lq('^second', 'm'), peer === 'pgbaas' ? both : [l2.id]);
    assert.deepEqual(await lq('line$', 'm'), both);
    assert.deepEqual(await lq('^first line$', 'm'), peer === 'pgbaas' ? [l1.id] : []);
    assert.deepEqual(await lq('^second'), [l2.id]);
    if (peer === 'pgbaas') {
      await expectError(q().matches('label', '(a)\\1').find(), 102, 'a back-reference');
      await expectError(q().matches('label', '\\bapple').find(), 102, 'a word boundary (a backspace in Postgres)');
    }
    return { tag };
  },

  // include: pointers replaced by their objects, each only if the caller may read it.
  async includes() {
    const alice = await signUp('inc-alice');
    const open = new GameScore({ score: 1, name: 'open' });
    const secret = new GameScore({ score: 2, name: 'secret' });
    secret.setACL(new Parse.ACL(alice));
    await Parse.Object.saveAll([open, secret]);
    const Post = Parse.Object.extend('Post');
    const Comment = Parse.Object.extend('Comment');
    const tag = `inc-${run}`;
    const p1 = new Post({ tag, title: 'one', score: open, scores: [open, secret] });
    const p2 = new Post({ tag, title: 'two', score: secret });
    await Parse.Object.saveAll([p1, p2]);
    const c1 = new Comment({ tag, text: 'hi', post: p1 });
    await c1.save();
    // As alice: both included.
    let posts = await new Parse.Query(Post).equalTo('tag', tag).include('score').ascending('title').find();
    assert.deepEqual(posts.map((p) => p.get('score').get('name')), ['open', 'secret']);
    // As someone else: an included object the caller may not read is left out, as
    // Parse Server leaves it out (the key goes; an array loses the element).
    await signUp('inc-bob');
    posts = await new Parse.Query(Post).equalTo('tag', tag).include(['score', 'scores']).ascending('title').find();
    assert.equal(posts.length, 2);
    assert.equal(posts[0].get('score').get('name'), 'open');
    assert.equal(posts[1].get('score'), undefined, 'an unreadable pointer is not shown');
    assert.deepEqual(posts[0].get('scores').map((x) => x.get('name')), ['open']);
    // Without include, the pointer is there.
    const bare = await new Parse.Query(Post).equalTo('tag', tag).ascending('title').find();
    assert.equal(bare[1].get('score').id, secret.id);
    // Nested, and on get.
    const c = await new Parse.Query(Comment).include('post.score').get(c1.id);
    assert.equal(c.get('post').get('title'), 'one');
    assert.equal(c.get('post').get('score').get('score'), 1);
    // Without include, a pointer is a pointer.
    const plain = await new Parse.Query(Comment).get(c1.id);
    assert.equal(plain.get('post').get('title'), undefined);
    await Parse.User.logOut();
    return { tag };
  },

  // Cloud functions: the exposed SQL functions of the RPC door, as the caller.
  async functions() {
    assert.equal(await Parse.Cloud.run('hello', { name: 'parse' }), 'hello parse');
    assert.deepEqual(await Parse.Cloud.run('whoami'), null, 'anonymous: no user');
    const u = await signUp('fn-user');
    assert.equal(await Parse.Cloud.run('whoami'), u.id, 'the function runs as the signed-in user');
    await expectError(Parse.Cloud.run('boom'), 141, 'a function that raises');
    const e = await expectError(Parse.Cloud.run('no_such_function'), 141, 'an unknown function');
    assert.match(e.message, /Invalid function/);
    await Parse.User.logOut();
    return {};
  },

  // Geo queries on GeoPoints: near (by distance), within a radius, a box, a polygon;
  // inside $or; on Polygon fields (polygonContains); in LiveQuery.
  async geo() {
    const tag = `geo-${run}`;
    const places = {
      Paris: [48.8566, 2.3522], London: [51.5072, -0.1276], Berlin: [52.52, 13.405], Madrid: [40.4168, -3.7038],
      Rome: [41.9028, 12.4964], NewYork: [40.7128, -74.006], Tokyo: [35.6762, 139.6503], Suva: [-18.1248, 178.4501], Apia: [-13.759, -171.7518],
    };
    await Parse.Object.saveAll(Object.entries(places).map(([name, [lat, lng]]) => new GameScore({ tag, name, loc: new Parse.GeoPoint(lat, lng) })));
    await new GameScore({ tag, name: 'Nowhere' }).save();
    const q = () => new Parse.Query(GameScore).equalTo('tag', tag);
    // Each step named in a failure (Parse Server's errors say nothing of which query).
    const names = async (query) => {
      try {
        return (await query.find()).map((o) => o.get('name'));
      } catch (e) {
        throw new Error(`${JSON.stringify(query.toJSON().where)}: ${e.message} (${e.code})`);
      }
    };
    const paris = new Parse.GeoPoint(...places.Paris);
    assert.deepEqual(await names(q().near('loc', paris).limit(3)), ['Paris', 'London', 'Berlin'], 'nearest first');
    assert.deepEqual(await names(q().withinKilometers('loc', paris, 1000)), ['Paris', 'London', 'Berlin'], 'within 1000 km, nearest first');
    assert.deepEqual((await names(q().withinKilometers('loc', paris, 1100, false))).sort(), ['Berlin', 'London', 'Madrid', 'Paris'], 'Rome is 1106 km away');
    assert.deepEqual((await names(q().withinMiles('loc', paris, 680, false))).sort(), ['Berlin', 'London', 'Madrid', 'Paris']);
    assert.deepEqual((await names(q().withinGeoBox('loc', new Parse.GeoPoint(40, -5), new Parse.GeoPoint(50, 5)))).sort(), ['Madrid', 'Paris']);
    const europe = [[45, -10], [55, -10], [55, 15], [45, 15]].map(([lat, lng]) => new Parse.GeoPoint(lat, lng));
    assert.deepEqual((await names(q().withinPolygon('loc', europe))).sort(), ['Berlin', 'London', 'Paris']);
    const got = await q().withinKilometers('loc', paris, 1000).select('name').limit(2).find();
    assert.deepEqual(got.map((o) => [o.get('name'), o.get('loc')]), [['Paris', undefined], ['London', undefined]], 'keys still apply');
    const pacific = [new Parse.GeoPoint(-20, 170), new Parse.GeoPoint(-10, -170)];
    if (peer === 'pgbaas') {
      // A box across the antimeridian (west of it to east of it); Parse Server on
      // Postgres reads it as the box between those longitudes through 0° (docs/parse.md).
      assert.deepEqual((await names(q().withinGeoBox('loc', ...pacific))).sort(), ['Apia', 'Suva']);
      const either = Parse.Query.or(q().equalTo('name', 'Suva'), q().equalTo('name', 'Paris'));
      assert.deepEqual(await names(either.withinGeoBox('loc', ...pacific)), ['Suva']);
      await expectError(q().near('loc', paris).ascending('name').find(), 102, 'near orders by distance');
    }
    // The page is read as asked, and the shape joins the query's other conditions.
    const bare = await q().near('loc', paris).exclude('loc').limit(2).find();
    assert.deepEqual(bare.map((o) => [o.get('name'), o.get('loc')]), [['Paris', undefined], ['London', undefined]]);
    const parisObj = await q().equalTo('name', 'Paris').first();
    assert.deepEqual(await names(q().near('loc', paris).notEqualTo('objectId', parisObj.id).limit(2)), ['London', 'Berlin'], 'near, all but one');
    const nearOr = Parse.Query.or(q().equalTo('name', 'Rome'), q().equalTo('name', 'Madrid'));
    assert.deepEqual(await names(nearOr.near('loc', paris)), ['Madrid', 'Rome']);
    // Geo conditions inside $or and $and.
    const farOrNear = Parse.Query.or(q().withinKilometers('loc', paris, 400, false), q().withinGeoBox('loc', new Parse.GeoPoint(30, 130), new Parse.GeoPoint(40, 140)));
    assert.deepEqual((await names(farOrNear)).sort(), ['London', 'Paris', 'Tokyo']);
    const both = Parse.Query.and(q().withinKilometers('loc', paris, 1500, false), q().withinPolygon('loc', europe));
    assert.deepEqual((await names(both)).sort(), ['Berlin', 'London', 'Paris']);
    const neither = Parse.Query.nor(q().withinKilometers('loc', paris, 1500, false), q().equalTo('name', 'Nowhere'));
    assert.deepEqual((await names(neither.equalTo('tag', tag))).sort(), ['Apia', 'NewYork', 'Suva', 'Tokyo']);
    // Polygon fields: polygonContains.
    const zone = (name, coords) => new GameScore({ tag, name, area: new Parse.Polygon(coords) });
    await Parse.Object.saveAll([
      zone('ZoneFrance', [[42, -5], [51, -5], [51, 8], [42, 8]]),
      zone('ZoneTriangle', [[0, 0], [0, 10], [10, 10]]),
    ]);
    const covering = async (lat, lng) => (await names(q().polygonContains('area', new Parse.GeoPoint(lat, lng)))).sort();
    assert.deepEqual(await covering(...places.Paris), ['ZoneFrance']);
    assert.deepEqual(await covering(1, 5), ['ZoneTriangle']);
    assert.deepEqual(await covering(5, 1), []);
    assert.deepEqual(await covering(...places.Berlin), []);
    // LiveQuery: a subscription within 500 km of Paris hears of places that come in
    // and go out of it.
    const live = liveClient(undefined);
    const sub = live.subscribe(new Parse.Query(GameScore).equalTo('tag', `${tag}-live`).withinKilometers('loc', paris, 500, false));
    await sub.subscribePromise;
    const heard = [];
    for (const ev of ['create', 'enter', 'update', 'leave']) sub.on(ev, (o) => heard.push([ev, o.get('name')]));
    const mover = await new GameScore({ tag: `${tag}-live`, name: 'mover', loc: new Parse.GeoPoint(...places.Rome) }).save();
    await new GameScore({ tag: `${tag}-live`, name: 'here', loc: new Parse.GeoPoint(...places.London) }).save();
    await mover.save({ loc: new Parse.GeoPoint(...places.Paris) });
    await mover.save({ loc: new Parse.GeoPoint(...places.Tokyo) });
    await until(() => heard.length >= 3, 'three geo events');
    await new Promise((r) => setTimeout(r, 300)); // nothing more comes
    assert.deepEqual(heard.map(([ev, name]) => (ev === 'leave' ? [ev] : [ev, name])), [['create', 'here'], ['enter', 'mover'], ['leave']]);
    live.close();
    // The candidates are what the caller may read: a place only its owner reads is
    // found by its owner alone.
    const owner = await signUp('geo-owner');
    const hidden = new GameScore({ tag, name: 'Hidden', loc: new Parse.GeoPoint(48.86, 2.35) });
    hidden.setACL(new Parse.ACL(owner));
    await hidden.save();
    assert.deepEqual(await names(q().near('loc', paris).limit(2)), ['Paris', 'Hidden'], 'its owner finds it');
    await Parse.User.logOut();
    assert.deepEqual(await names(q().near('loc', paris).limit(2)), ['Paris', 'London'], 'an anonymous caller does not');
    return {};
  },

  // Queries on users (new Parse.Query(Parse.User)): a user finds only itself (pgbaas
  // shows no account to another; Parse Server's users are private by default, its
  // enforcePrivateUsers); the master key finds any by username, email or objectId, and
  // deletes one.
  async userQueries() {
    const ann = await signUp('uq-ann');
    const ben = await signUp('uq-ben');
    const benToken = ben.getSessionToken();
    await Parse.User.become(ann.getSessionToken());
    const seen = await new Parse.Query(Parse.User).find();
    assert.deepEqual(seen.map((u) => u.id), [ann.id], 'a user finds itself only');
    assert.equal((await new Parse.Query(Parse.User).equalTo('username', `uq-ben-${run}`).find()).length, 0, 'not another, even by name');
    assert.equal((await new Parse.Query(Parse.User).equalTo('nick', 'uq-ann').first()).id, ann.id, 'its own fields');
    assert.equal(await new Parse.Query(Parse.User).equalTo('nick', 'nobody').count(), 0);
    assert.equal(await new Parse.Query(Parse.User).equalTo('objectId', ben.id).count(), 0, 'nor its count');
    assert.equal(await new Parse.Query(Parse.User).containedIn('username', [`uq-ben-${run}`, `uq-ann-${run}`]).count(), 1);
    assert.equal((await new Parse.Query(Parse.User).greaterThan('createdAt', new Date(Date.now() - 3600e3)).find()).length, 1, 'by its times');
    assert.equal((await new Parse.Query(Parse.User).lessThan('createdAt', new Date(Date.now() - 3600e3)).find()).length, 0);
    // The master key: any account, by the names it has.
    const both = await new Parse.Query(Parse.User).containedIn('username', [`uq-ann-${run}`, `uq-ben-${run}`]).descending('username').find({ useMasterKey: true });
    assert.deepEqual(both.map((u) => u.get('nick')), ['uq-ben', 'uq-ann']);
    const one = await new Parse.Query(Parse.User).equalTo('username', `uq-ben-${run}`).equalTo('nick', 'uq-ben').first({ useMasterKey: true });
    assert.equal(one.id, ben.id);
    assert.equal(await new Parse.Query(Parse.User).equalTo('objectId', ben.id).equalTo('nick', 'other').count({ useMasterKey: true }), 0);
    const byId = await new Parse.Query(Parse.User).get(ben.id, { useMasterKey: true });
    assert.equal(byId.get('username'), `uq-ben-${run}`);
    // The master key on the users' own fields alone: every account is searched.
    const onlyData = await new Parse.Query(Parse.User).equalTo('nick', 'uq-ann').find({ useMasterKey: true });
    assert.ok(onlyData.some((u) => u.id === ann.id) && onlyData.every((u) => u.get('nick') === 'uq-ann'), 'by a data field alone');
    const newest = await new Parse.Query(Parse.User).containedIn('nick', ['uq-ann', 'uq-ben']).greaterThanOrEqualTo('createdAt', ann.createdAt)
      .descending('username').find({ useMasterKey: true });
    assert.deepEqual(newest.map((u) => u.id), [ben.id, ann.id], 'with times and an order');
    assert.equal(await new Parse.Query(Parse.User).equalTo('nick', 'uq-ann').greaterThanOrEqualTo('createdAt', ann.createdAt).count({ useMasterKey: true }), 1);
    // near on users: the master key's scan, nearest first.
    await ben.save({ home: new Parse.GeoPoint(1, 1), run }, { sessionToken: benToken });
    await ann.save({ home: new Parse.GeoPoint(5, 5), run });
    const byDistance = await new Parse.Query(Parse.User).equalTo('run', run).near('home', new Parse.GeoPoint(0, 0)).find({ useMasterKey: true });
    assert.deepEqual(byDistance.map((u) => u.id), [ben.id, ann.id], 'nearest first');
    const fromAnn = await new Parse.Query(Parse.User).equalTo('run', run).near('home', new Parse.GeoPoint(6, 6)).find({ useMasterKey: true });
    assert.deepEqual(fromAnn.map((u) => u.id), [ann.id, ben.id]);
    // The master key deletes an account: it no longer signs in.
    await ben.destroy({ useMasterKey: true });
    await expectError(Parse.User.logIn(`uq-ben-${run}`, 'pw-uq-ben-secret'), 101, 'a deleted user signs in');
    assert.equal(await new Parse.Query(Parse.User).equalTo('objectId', ben.id).count({ useMasterKey: true }), 0);
    if (peer === 'pgbaas') {
      await expectError(Parse.User.become(benToken), 209, 'a deleted user\'s session');
    }
    await Parse.User.become(ann.getSessionToken());
    await Parse.User.logOut();
    return { ann: ann.id, ben: ben.id };
  },

  // Parse.Schema (the master key): a class is a collection, made with who may create,
  // its fields those its objects hold, dropped when empty (docs/parse.md, "Schemas").
  async schemas() {
    const cls = `Shelf${run.replace(/[^0-9A-Za-z]/g, '')}`;
    const schema = new Parse.Schema(cls);
    schema.addString('title').addNumber('pages');
    schema.setCLP({ find: { '*': true }, get: { '*': true }, count: { '*': true }, create: { requiresAuthentication: true },
      update: { '*': true }, delete: { '*': true }, addField: { '*': true }, protectedFields: { '*': [] } });
    const saved = await schema.save();
    assert.equal(saved.className, cls.toLowerCase(), 'the class is its collection');
    assert.deepEqual(saved.classLevelPermissions.create, { requiresAuthentication: true });
    await expectError(new Parse.Object(cls).save({ title: 'x' }), 119, 'an anonymous client creates in a class that requires authentication');
    await signUp('schema-user');
    const book = new Parse.Object(cls);
    await book.save({ title: 'Dune', pages: 412, at: new Date(Date.UTC(2026, 0, 1)), tags: ['sf'], where: new Parse.GeoPoint(1, 2) });
    const got = await new Parse.Schema(cls).get();
    const types = Object.fromEntries(Object.entries(got.fields).map(([k, v]) => [k, v.type]));
    assert.deepEqual(types, { objectId: 'String', createdAt: 'Date', updatedAt: 'Date', ACL: 'ACL', title: 'String', pages: 'Number',
      at: 'Date', tags: 'Array', where: 'GeoPoint' }, 'the fields its objects hold, typed by their values');
    const all = await Parse.Schema.all();
    assert.ok(all.some((c) => c.className === cls.toLowerCase()));
    assert.ok(all.some((c) => c.className === '_User') && all.some((c) => c.className === '_Role'));
    const more = new Parse.Schema(cls);
    more.addBoolean('read');
    await more.update();
    await expectError(new Parse.Schema(cls).delete(), 255, 'a class that still has objects');
    await expectError(new Parse.Schema(cls).save(), 103, 'a class made twice');
    await book.destroy();
    await new Parse.Schema(cls).delete();
    await expectError(new Parse.Schema(cls).get(), 103, 'a dropped class');
    await Parse.User.logOut();
    return { collection: cls.toLowerCase() };
  },

  // Roles (_Role) are pgbaas's roles: made and changed with the master key, found by
  // their members, and an ACL naming a role is what its members (nesting included) may
  // read. A role's objectId is its pgbaas name (docs/parse.md, "Roles").
  async roles() {
    const alice = await signUp('role-alice');
    const bob = await signUp('role-bob');
    // (No logOut between: it would end the current user's session. The master key's
    // calls say useMasterKey, which the door takes over any session.)
    const editors = new Parse.Role(`Editors-${run}`, new Parse.ACL());
    editors.getUsers().add(alice);
    await editors.save(null, { useMasterKey: true });
    assert.equal(editors.id, `editors-${run}`.toLowerCase(), 'the objectId is the pgbaas name');
    await expectError(new Parse.Role(`EDITORS-${run}`, new Parse.ACL()).save(null, { useMasterKey: true }), 137, 'the same name in another spelling');
    // A document only editors may read (made with the master key).
    const doc = new GameScore();
    const acl = new Parse.ACL();
    acl.setRoleReadAccess(editors, true);
    doc.setACL(acl);
    doc.set({ score: 7, tag: `roles-${run}` });
    await doc.save(null, { useMasterKey: true });
    await Parse.User.become(alice.getSessionToken());
    assert.equal((await new Parse.Query(GameScore).get(doc.id)).get('score'), 7, 'an editor reads it');
    const alicesRoles = await new Parse.Query(Parse.Role).equalTo('users', alice).find();
    assert.deepEqual(alicesRoles.map((r) => r.getName()), [editors.id], 'a user finds the roles it is in');
    assert.ok(alicesRoles[0] instanceof Parse.Role);
    assert.equal((await new Parse.Query(Parse.Role).get(editors.id)).getName(), editors.id);
    await expectError(new Parse.Role(`Mine-${run}`, new Parse.ACL()).save(), 119, 'a user makes a role');
    const mine = await new Parse.Query(Parse.Role).get(editors.id);
    mine.getUsers().add(bob);
    await expectError(mine.save(), 119, 'a member adds a user to its role');
    await Parse.User.become(bob.getSessionToken());
    await expectError(new Parse.Query(GameScore).get(doc.id), 101, 'bob is no editor');
    assert.equal((await new Parse.Query(Parse.Role).find()).length, 0, 'bob holds no role and sees none');
    await expectError(new Parse.Query(Parse.Role).get(editors.id), 101, 'bob gets a role he does not hold');
    // Nesting: chiefs' members are editors too (editors.getRoles().add(chiefs)).
    const chiefs = new Parse.Role(`Chiefs-${run}`, new Parse.ACL());
    chiefs.getUsers().add(bob);
    await chiefs.save(null, { useMasterKey: true });
    editors.getRoles().add(chiefs);
    await editors.save(null, { useMasterKey: true });
    await Parse.User.become(bob.getSessionToken());
    assert.equal((await new Parse.Query(GameScore).get(doc.id)).get('score'), 7, 'a chief reads what editors may');
    const bobsRoles = await new Parse.Query(Parse.Role).ascending('name').find();
    assert.deepEqual(bobsRoles.map((r) => r.getName()), [chiefs.id, editors.id], 'bob holds both');
    const inEditors = await bobsRoles[1].getRoles().query().find();
    assert.deepEqual(inEditors.map((r) => r.id), [chiefs.id], 'the roles relation of editors');
    assert.equal((await new Parse.Query(Parse.Role).equalTo('users', bob).find()).length, 1, 'bob is a direct member of chiefs only');
    assert.equal((await new Parse.Query(Parse.Role).equalTo('users', alice).find()).length, 0, 'bob does not learn that alice is an editor');
    // role.getUsers().query(): the direct members Postgres shows the caller.
    assert.deepEqual((await bobsRoles[1].getUsers().query().find()).map((u) => u.id), [], 'bob is in editors through chiefs, no direct member');
    assert.deepEqual((await bobsRoles[0].getUsers().query().find()).map((u) => u.id), [bob.id], 'a member sees itself');
    assert.deepEqual((await editors.getUsers().query().find({ useMasterKey: true })).map((u) => u.id), [alice.id], 'the master key sees the members');
    assert.deepEqual((await chiefs.getUsers().query().equalTo('username', 'nobody').find({ useMasterKey: true })).length, 0, 'with the rest of where');
    // A _User subquery: found as a user query finds users (a user itself; anyone by the master key).
    const owned = await new GameScore({ tag: `roles-owned-${run}`, owner: bob }).save(null, { useMasterKey: true });
    const byOwner = (as) => new Parse.Query(GameScore).equalTo('tag', `roles-owned-${run}`)
      .matchesQuery('owner', new Parse.Query(Parse.User).equalTo('objectId', bob.id)).find(as);
    assert.deepEqual((await byOwner()).map((o) => o.id), [owned.id], 'bob finds his own user');
    assert.deepEqual((await byOwner({ useMasterKey: true })).map((o) => o.id), [owned.id]);
    // A role's members as a subquery: objects by chiefs, and not by chiefs.
    const ownedQ = () => new Parse.Query(GameScore).equalTo('tag', `roles-owned-${run}`);
    assert.deepEqual((await ownedQ().matchesQuery('owner', chiefs.getUsers().query()).find({ useMasterKey: true })).map((o) => o.id), [owned.id]);
    assert.deepEqual((await ownedQ().doesNotMatchQuery('owner', chiefs.getUsers().query()).find({ useMasterKey: true })).map((o) => o.id), []);
    assert.deepEqual((await ownedQ().matchesQuery('owner', editors.getUsers().query()).find({ useMasterKey: true })).map((o) => o.id), []);
    await Parse.User.become(alice.getSessionToken());
    assert.deepEqual((await byOwner()).map((o) => o.id), [], 'alice does not find bob\'s user');
    const asAlice = await new Parse.Query(Parse.Role).get(editors.id);
    assert.deepEqual((await asAlice.getRoles().query().find()).map((r) => r.id), [], 'alice does not see chiefs, which she does not hold');
    assert.deepEqual((await asAlice.getUsers().query().find()).map((u) => u.id), [alice.id], 'alice sees herself in editors, no one else');
    await Parse.User.become(bob.getSessionToken());
    // Alice leaves editors: she no longer reads the document.
    editors.getUsers().remove(alice);
    await editors.save(null, { useMasterKey: true });
    await Parse.User.become(alice.getSessionToken());
    await expectError(new Parse.Query(GameScore).get(doc.id), 101, 'alice left editors');
    // The master key sees every role and its members.
    const all = await new Parse.Query(Parse.Role).containedIn('name', [`Editors-${run}`, `Chiefs-${run}`]).descending('name').find({ useMasterKey: true });
    assert.deepEqual(all.map((r) => r.id), [editors.id, chiefs.id]);
    const chiefsHas = await new Parse.Query(Parse.Role).equalTo('users', bob).count({ useMasterKey: true });
    assert.equal(chiefsHas, 1);
    // Deleting chiefs takes its members' access with it.
    await chiefs.destroy({ useMasterKey: true });
    await Parse.User.become(bob.getSessionToken());
    await expectError(new Parse.Query(GameScore).get(doc.id), 101, 'chiefs is gone');
    await Parse.User.logOut();
    return { doc: doc.id, alice: alice.id, bob: bob.id, editors: editors.id, chiefs: chiefs.id };
  },

  // After pgbaas-import parse: the data a Parse Server app wrote (the scenarios above,
  // run against Parse Server with PARSE_IMPORTED_RUN's names) read back through the door.
  async imported() {
    const r = process.env.PARSE_IMPORTED_RUN;
    // An anonymous user signs in again with its anonymous id, as the same user.
    const kept = await Parse.User.logInWith('anonymous', { authData: { id: `keep-${r}` } });
    assert.equal(kept.get('nick'), 'kept', 'the imported anonymous user, not a new one');
    await Parse.User.logOut();
    // Users sign in with the passwords they chose on Parse Server.
    const alice = await Parse.User.logIn(`acl-alice-${r}`, 'pw-acl-alice-secret');
    const mine = await new Parse.Query(GameScore).equalTo('owner', 'alice').find();
    assert.equal(mine.length, 1);
    assert.equal(mine[0].get('score'), 3);
    assert.equal(mine[0].getACL().getWriteAccess(alice), true);
    assert.equal(mine[0].getACL().getPublicReadAccess(), true);
    // Another user reads it (public read) but may not write it.
    await Parse.User.logIn(`bob-${r}`, 'pw-bob-secret');
    const seen = await new Parse.Query(GameScore).get(mine[0].id);
    seen.set('score', 4);
    await expectError(seen.save(), 101, 'an imported ACL still refuses bob a write');
    // The query scenario's objects, with their Dates and arrays.
    const q = new Parse.Query(GameScore).equalTo('tag', `q-${r}`);
    assert.equal(await q.count(), 10);
    const all = await q.ascending('n').find();
    assert.deepEqual(all.map((o) => o.get('n')), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(all[3].get('at').toISOString(), '2026-01-04T00:00:00.000Z');
    assert.deepEqual(all[3].get('list'), [3, 4]);
    assert.equal(all[9].get('name'), undefined);
    const later = await new Parse.Query(GameScore).equalTo('tag', `q-${r}`).greaterThan('at', new Date(Date.UTC(2026, 0, 8))).find();
    assert.deepEqual(later.map((o) => o.get('n')).sort(), [8, 9]);
    // Pointers were rewritten to the new ids: include still finds them, under the ACLs.
    await Parse.User.logIn(`inc-alice-${r}`, 'pw-inc-alice-secret');
    const posts = await new Parse.Query('Post').equalTo('tag', `inc-${r}`).include('score').ascending('title').find();
    assert.deepEqual(posts.map((p) => p.get('score').get('name')), ['open', 'secret']);
    await Parse.User.logIn(`inc-bob-${r}`, 'pw-inc-bob-secret');
    const bobs = await new Parse.Query('Post').equalTo('tag', `inc-${r}`).include('score').ascending('title').find();
    assert.equal(bobs[1].get('score'), undefined, 'the secret score stays alice\'s');
    // Relations came along, in the door's form.
    const relPost = await new Parse.Query('Post').equalTo('tag', `rel-${r}`).first();
    const liked = await relPost.relation('likes').query().find();
    assert.deepEqual(liked.map((o) => o.get('n')).sort(), [2, 3]);
    // A user's own fields came along.
    const saved = await Parse.User.logIn(`saved-${r}`, 'pw-save-secret');
    assert.equal(saved.get('visits'), 3);
    await Parse.User.logOut();
    // Files' bytes came along (--files-from): the object's File is served here.
    const withFile = await new Parse.Query(GameScore).equalTo('tag', `files-${r}`).first();
    const file = withFile.get('attachment');
    assert.ok(file instanceof Parse.File);
    assert.match(file.name(), /^[0-9a-f-]{36}_hello\.txt$/, 'named as the door names files');
    assert.ok(file.url().startsWith(`${serverURL}/files/`), file.url());
    const got = await fetch(file.url());
    assert.equal(got.status, 200);
    assert.match(got.headers.get('content-type'), /^text\/plain/, 'the type Parse Server served');
    assert.equal(await got.text(), `hello, parse ${r}`);
    return {};
  },
};

// A scenario that waits for an answer that never comes fails, rather than hanging the test.
setTimeout(() => {
  console.error('scenarios did not finish within 120 s');
  process.exit(1);
}, 120000).unref();

(async () => {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(scenarios);
  for (const name of names) {
    try {
      const facts = await scenarios[name]();
      console.log(JSON.stringify({ ok: name, ...(facts || {}) }));
    } catch (e) {
      console.error(`scenario ${name} failed:`, e && e.stack ? e.stack : e, e && e.code);
      process.exit(1);
    }
  }
})();
