//! Pure domain logic: request validation and normalisation. No I/O here.

pub mod list_query;
pub mod task;
pub mod task_view;
