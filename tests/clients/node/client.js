// Real-client acceptance check with node-postgres: connect, parameters (unnamed and a named prepared statement),
// transactions, an error, then print OK.
//
// usage: node client.js [HOST PORT USER PASSWORD DBNAME]   (missing ones come from PGHOST, PGPORT, ... env vars)
'use strict';

const { Client } = require('pg');

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

async function run(config) {
  const client = new Client(config);
  await client.connect();
  try {
    for (let i = 0; i < 3; i++) {
      // Simple protocol (no parameters) and extended protocol with an unnamed statement.
      const plain = await client.query('SELECT 1 AS one');
      check(plain.rows[0].one === 1, 'plain query');
      const sum = await client.query('SELECT $1::int + $2::int AS sum', [1, 2]);
      check(sum.rows[0].sum === 3, 'parameter arithmetic');
      // Named prepared statement: parsed once per connection, then reused by name.
      const named = await client.query({
        name: 'q1',
        text: 'SELECT id, name FROM products WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id LIMIT $2',
        values: [1, 5],
      });
      check(named.rows.length === 5, `named statement rows: ${JSON.stringify(named.rows)}`);
    }
    const text = await client.query('SELECT $1::text AS t, $2::int AS n', ["héllo 'quoted'", null]);
    check(text.rows[0].t === "héllo 'quoted'" && text.rows[0].n === null, 'text and NULL parameters');

    // Rolled-back transaction leaves no row; committed one does.
    await client.query('BEGIN');
    const inserted = await client.query(
      'INSERT INTO client_events (client, note) VALUES ($1, $2) RETURNING id', ['node', 'rolled back']);
    const rolledBackId = inserted.rows[0].id;
    await client.query('ROLLBACK');
    const gone = await client.query('SELECT count(*)::int AS n FROM client_events WHERE id = $1', [rolledBackId]);
    check(gone.rows[0].n === 0, 'rolled-back row is gone');

    await client.query('BEGIN');
    const committed = await client.query(
      'INSERT INTO client_events (client, note) VALUES ($1, $2) RETURNING id', ['node', 'committed']);
    await client.query('COMMIT');
    const committedId = committed.rows[0].id;
    const kept = await client.query('SELECT count(*)::int AS n FROM client_events WHERE id = $1', [committedId]);
    check(kept.rows[0].n === 1, 'committed row is visible');
    await client.query('DELETE FROM client_events WHERE id = $1', [committedId]);

    // Errors reach the client with their SQLSTATE, on both protocols, and the connection stays usable.
    for (const [sql, values] of [['SELECT 1/0', undefined], ['SELECT $1::int / 0', [7]]]) {
      let caught = null;
      try {
        await client.query(sql, values);
      } catch (e) {
        caught = e;
      }
      check(caught !== null && caught.code === '22012', `SQLSTATE of ${sql}: ${caught && caught.code}`);
      const after = await client.query('SELECT 1 AS one');
      check(after.rows[0].one === 1, 'connection works after an error');
    }
    const again = await client.query({ name: 'q1', values: [2, 3] });
    check(again.rows.length === 3, 'named statement still usable after errors');
  } finally {
    await client.end();
  }
}

const [host, port, user, password, database] = process.argv.slice(2);
const config = {
  host: host || process.env.PGHOST || '127.0.0.1',
  port: Number(port || process.env.PGPORT || 5432),
  user: user || process.env.PGUSER,
  password: password || process.env.PGPASSWORD,
  database: database || process.env.PGDATABASE || 'app',
  connectionTimeoutMillis: 10000,
};

run(config).then(
  () => console.log('OK'),
  (e) => {
    console.log(`FAIL: ${e.code ? e.code + ' ' : ''}${e.message}`);
    process.exitCode = 1;
  });
