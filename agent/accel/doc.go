// Package accel takes the inventory of the device the agent runs on: its
// NVIDIA GPUs (through NVML, via go-nvml), CPU, memory, operating system and
// disk space. The agent uses it to pick the artifact variants it can run
// (cuda before cpu when a GPU is present), telemetry reports it to the hub,
// and `fleetagent doctor` prints it.
//
// Detection never fails: a device without an NVIDIA driver simply has no
// GPUs, and anything that cannot be read is described by a [Note] in the
// [Inventory] instead of an error, so that an odd /proc or a broken driver
// install cannot keep the agent from serving models on the CPU.
//
// The /proc parsers ([ParseCPUInfo], [ParseMeminfo]) take an io.Reader and
// are safe on arbitrary input.
package accel
