//! Prepared statements, kept per connection: every statement of the store
//! is parsed once per session, then each use is one round trip (a bare
//! `query(&str)` would prepare it again each time, two round trips).

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Client, GenericClient, Row, Statement};

/// The statements a store body runs: `GenericClient`'s, with the statement
/// prepared once per connection.
pub(super) trait Q {
    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error>;
    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error>;
    fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error>;
    fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error>;
}

pub(super) type Cache = HashMap<String, Statement>;

fn prepared(
    c: &mut impl GenericClient,
    cache: &mut Cache,
    sql: &str,
) -> Result<Statement, postgres::Error> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let s = c.prepare(sql)?;
    cache.insert(sql.to_string(), s.clone());
    Ok(s)
}

macro_rules! q_methods {
    ($client:ident, $cache:ident) => {
        fn execute(
            &mut self,
            sql: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<u64, postgres::Error> {
            let s = prepared(self.$client, self.$cache, sql)?;
            self.$client.execute(&s, params)
        }
        fn query(
            &mut self,
            sql: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<Row>, postgres::Error> {
            let s = prepared(self.$client, self.$cache, sql)?;
            self.$client.query(&s, params)
        }
        fn query_one(
            &mut self,
            sql: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Row, postgres::Error> {
            let s = prepared(self.$client, self.$cache, sql)?;
            self.$client.query_one(&s, params)
        }
        fn query_opt(
            &mut self,
            sql: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<Row>, postgres::Error> {
            let s = prepared(self.$client, self.$cache, sql)?;
            self.$client.query_opt(&s, params)
        }
    };
}

/// A client (or transaction, or savepoint) with its connection's cache.
pub(super) struct Cx<'a, C: GenericClient> {
    pub c: &'a mut C,
    pub cache: &'a mut Cache,
}

impl<C: GenericClient> Q for Cx<'_, C> {
    q_methods!(c, cache);
}

/// The connection of a ledger and its statements.
pub(super) struct Conn {
    pub client: Client,
    pub cache: Cache,
}

impl Conn {
    pub fn new(client: Client) -> Conn {
        Conn {
            client,
            cache: Cache::new(),
        }
    }
}

/// Through `&mut Conn` (a locked ledger connection) outside a transaction.
pub(super) struct ConnQ<'a> {
    client: &'a mut Client,
    cache: &'a mut Cache,
}

impl Q for Conn {
    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        ConnQ {
            client: &mut self.client,
            cache: &mut self.cache,
        }
        .execute(sql, params)
    }
    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        ConnQ {
            client: &mut self.client,
            cache: &mut self.cache,
        }
        .query(sql, params)
    }
    fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        ConnQ {
            client: &mut self.client,
            cache: &mut self.cache,
        }
        .query_one(sql, params)
    }
    fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        ConnQ {
            client: &mut self.client,
            cache: &mut self.cache,
        }
        .query_opt(sql, params)
    }
}

impl Q for ConnQ<'_> {
    q_methods!(client, cache);
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}
