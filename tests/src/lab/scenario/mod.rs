//! The lab's scenarios (`cargo xtask lab run <name> --seed N`, all of them with `lab all`):
//! each injects its faults into a running lab while clients write through the agents; the
//! runner ([`run::run`]) records and checks the history.

mod catalog;
mod catalog_authority;
mod catalog_clock;
mod observer;
mod rng;
pub mod run;

use crate::lab::history::{FaultMark, Outage};
use crate::lab::hosts::Lab;
use crate::lab::net::LabError;

pub use catalog::ALL;
pub use rng::Rng;

/// What a scenario step may use: the lab, a seeded generator, and the marks it records.
pub struct Ctx<'a> {
    pub lab: &'a mut Lab,
    pub rng: Rng,
    pub faults: Vec<FaultMark>,
    pub converge_from: Vec<(String, f64)>,
    pub outages: Vec<Outage>,
}

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&mut Ctx) -> Result<(), LabError>,
}

/// The scenario called `name`, or an error listing them all.
pub fn find(name: &str) -> Result<&'static Scenario, LabError> {
    ALL.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = ALL.iter().map(|s| s.name).collect();
        LabError::Unsupported(format!(
            "no scenario `{name}`; scenarios: {}",
            names.join(", ")
        ))
    })
}
