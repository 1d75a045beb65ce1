/* testrun.h -- `cs-pdns test`: runs policy tests (*_test.lua) in the production policy sandbox.
 * Must not: reach CloudStack, the database or Kafka; tests answer cs.call with cs.mock. */
#ifndef CSPDNS_TESTRUN_H
#define CSPDNS_TESTRUN_H

/* argv[0] is the subcommand name ("test"), then [--policy FILE] FILES_OR_DIRS... A directory
 * contributes its files ending in _test.lua, sorted. Prints "ok N - name" / "not ok N - name"
 * (with the failure indented below) per test and a last line "N passed, N failed".
 * Returns the exit status: 0 only when every test passed, 1 on failures, 2 on bad usage. */
int testrun_main(int argc, char **argv);

#endif
