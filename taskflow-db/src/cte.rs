//! Two writes as one statement: `WITH first AS (<first>) <then>`.
//!
//! A single statement is atomic without a transaction of its own, so a change and its outbox rows
//! written this way need no BEGIN and COMMIT: one round trip instead of four. PostgreSQL runs a
//! data-modifying `WITH` part exactly once whether or not the main statement reads it.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::QueryResult;

#[derive(Debug, Clone, Copy)]
pub struct WithWrite<A, B> {
    first: A,
    then: B,
}

/// `first` and `then` as one statement. Both run on one snapshot, so `then` must not depend on
/// the rows `first` writes (it does not see them).
pub fn with_write<A, B>(first: A, then: B) -> WithWrite<A, B> {
    WithWrite { first, then }
}

impl<A: QueryFragment<Pg>, B: QueryFragment<Pg>> QueryFragment<Pg> for WithWrite<A, B> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Placeholders are numbered in walk order, so the two parts' binds never collide.
        out.push_sql("WITH first AS (");
        self.first.walk_ast(out.reborrow())?;
        out.push_sql(") ");
        self.then.walk_ast(out.reborrow())
    }
}

/// No static id, as for [`crate::prepared::Prepared`]: the cache key is the SQL text.
impl<A, B> QueryId for WithWrite<A, B> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

/// The condition, for `also` and `then` of [`with_write_if`], that `first` wrote.
pub const FIRST_WROTE: &str = "EXISTS (SELECT FROM first)";

#[derive(Debug, Clone, Copy)]
pub struct WithWriteIf<A, B, C> {
    first: A,
    also: B,
    then: C,
}

/// `WITH first AS (<first>), also AS (<also>) <then>`, for a `first` that may write nothing (a
/// version check): it must return a row for each it writes (`RETURNING`), and `also` and `then`
/// must each hold to [`FIRST_WROTE`], so that nothing at all is written when it wrote nothing.
pub fn with_write_if<A, B, C>(first: A, also: B, then: C) -> WithWriteIf<A, B, C> {
    WithWriteIf { first, also, then }
}

impl<A, B, C> QueryFragment<Pg> for WithWriteIf<A, B, C>
where
    A: QueryFragment<Pg>,
    B: QueryFragment<Pg>,
    C: QueryFragment<Pg>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH first AS (");
        self.first.walk_ast(out.reborrow())?;
        out.push_sql("), also AS (");
        self.also.walk_ast(out.reborrow())?;
        out.push_sql(") ");
        self.then.walk_ast(out.reborrow())
    }
}

impl<A, B, C> QueryId for WithWriteIf<A, B, C> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}
