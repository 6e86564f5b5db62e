//! Statements prepared once per connection.
//!
//! diesel caches a statement's server-side preparation only when it can prove the SQL text never
//! varies. It cannot for an UPDATE from a changeset, raw SQL, a multi-row insert, an insert with
//! `Option` fields or an upsert, so it parses and plans those again on every run: an extra round
//! trip and a planning each, a tenth of the database's time under load. [`Prepare::prepared`]
//! vouches for a statement instead; the connection then keys its cache by the statement's SQL
//! text and bind types, so a statement whose text does vary (a changeset that skips a field)
//! adds one entry per shape and is never confused with another.
//!
//! Only for statements with a bounded number of shapes: never around SQL built from values or a
//! variable-length `IN` list, which would grow the cache without bound.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::QueryResult;

/// A statement the connection may keep prepared; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Prepared<Q>(Q);

/// `.prepared()` on any statement.
pub trait Prepare: Sized {
    fn prepared(self) -> Prepared<Self> {
        Prepared(self)
    }
}

impl<Q: QueryFragment<Pg>> Prepare for Q {}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

/// No static id: the cache key is the SQL text, which tells every shape apart.
impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}
