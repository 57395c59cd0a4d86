//! Settling a job: [`decide`] what follows from its outcome (pure, tested
//! as a table), then [`apply`] it, row first, then the event, then the
//! message.

mod apply;
mod decide;
#[cfg(test)]
mod tests;

pub(crate) use self::apply::Settle;
pub(crate) use self::decide::{ClaimFacts, Facts, Outcome, decide};
