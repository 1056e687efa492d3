// Package testenv starts real servers for tests: a Mosquitto MQTT broker
// (Mosquitto) and a MinIO S3 server (MinIO), each as a child process of the
// test on free loopback ports, with its configuration, data and log in a
// temporary directory of the test. Calls are independent, so parallel tests
// never share a port or a file. Servers can be stopped, killed and started
// again on the same port with the same data, to test outages and restarts.
// They end with the test: cleanup kills the process group, and the kernel
// kills the children (Pdeathsig) if the test binary dies first. When a test
// fails, the tail of each server's log is written to the test log.
//
// Binaries are found through MODELFLEET_MOSQUITTO and MODELFLEET_MINIO, then
// the usual places (PATH, /usr/sbin, the module's .deps/bin filled by
// `make deps`). A missing binary skips the test, or fails it when CI=true.
package testenv
