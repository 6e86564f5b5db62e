//! Raw SQL read by column position.
//!
//! diesel reads the rows of `sql_query` by column name (`QueryableByName`): each field looks its
//! column up in the row's list of names, 17 string comparisons a field for a task, which was 4 %
//! of the backend's CPU on a list page. [`Positional::positional`] declares the statement's
//! result types instead, so rows are read as `Queryable`, field by field in column order. The
//! statement's columns must then be exactly the struct's fields in order (as
//! [`crate::tasks::COLUMNS`] is for [`crate::tasks::TaskRow`], which a test checks).

use std::marker::PhantomData;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::QueryResult;

/// A statement whose rows have the SQL types `ST`; see the module documentation.
#[derive(Debug)]
pub struct Typed<Q, ST>(Q, PhantomData<fn() -> ST>);

/// `.positional::<ST>()` on any statement.
pub trait Positional: Sized {
    fn positional<ST>(self) -> Typed<Self, ST> {
        Typed(self, PhantomData)
    }
}

impl<Q: QueryFragment<Pg>> Positional for Q {}

impl<Q: QueryFragment<Pg>, ST> QueryFragment<Pg> for Typed<Q, ST> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }
}

impl<Q: QueryId, ST> QueryId for Typed<Q, ST> {
    type QueryId = Q::QueryId;
    const HAS_STATIC_QUERY_ID: bool = Q::HAS_STATIC_QUERY_ID;
}

impl<Q, ST> Query for Typed<Q, ST> {
    type SqlType = ST;
}
