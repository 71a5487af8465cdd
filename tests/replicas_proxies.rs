//! The replica harness's own pieces, standalone (issue 13): the round-robin
//! balancer in front of the callback listeners, the cuttable proxy in front
//! of PostgreSQL, spec files with explicit mtimes.

mod replicas_support;

use replicas_support::self_tests;

#[test]
fn round_robin_rotates_and_skips_down_and_dead_backends() {
    self_tests::round_robin_rotates_and_skips_down_and_dead_backends();
}

#[test]
fn round_robin_keeps_a_connection_on_its_backend() {
    self_tests::round_robin_keeps_a_connection_on_its_backend();
}

#[test]
fn cuttable_forwards_cuts_and_restores() {
    self_tests::cuttable_forwards_cuts_and_restores();
}

#[test]
fn cuttable_carries_postgres() {
    self_tests::cuttable_carries_postgres();
}

#[test]
fn write_file_sets_the_mtime_before_the_file_appears() {
    self_tests::write_file_sets_the_mtime_before_the_file_appears();
}

#[test]
fn harness_drives_a_real_replica_through_the_balancer() {
    replicas_support::e2e_self_tests::a_replica_is_notified_through_the_balancer(None);
}

#[test]
fn harness_drives_a_real_replica_under_libfaketime() {
    replicas_support::e2e_self_tests::a_replica_is_notified_through_the_balancer(Some("+30s"));
}
