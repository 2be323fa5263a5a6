//! End-to-end tests: the real `tsrelay` binary on 127.0.0.1, driven over
//! sockets, against recording sinks and real carbon daemons.

#![allow(unreachable_pub)]

mod util;

mod amqp;
mod backpressure;
mod carbon;
mod cli;
mod clusters;
mod faults;
mod graphite;
mod irondb;
mod kairos;
mod limits;
mod routing;
