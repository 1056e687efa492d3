// Package devenv runs the embedded development defaults of `fleethub dev`:
// an MQTT broker (mochi-mqtt) and an S3 endpoint (versitygw on a POSIX
// directory) inside the hub process, so a newcomer needs nothing but the hub
// binary to try a fleet. It is for development only: the broker lets every
// client connect and use every topic, and the S3 endpoint has a single root
// account. That is why both bind a loopback address by default and refuse any
// other address unless the caller sets AllowRemote explicitly: on loopback
// only processes on the same machine can reach them. Production hubs use a
// real broker (e.g. Mosquitto) and a real object store instead.
//
// Only hub code may import this package; the agent binary must not link the
// broker or the gateway.
package devenv
