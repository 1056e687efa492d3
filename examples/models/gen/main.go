// Command gen writes the example ONNX models of package models. Run it
// through `go generate ./examples/models` from the module root.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/modelfleet/modelfleet/examples/models"
)

func main() {
	out := flag.String("out", ".", "directory to write the .onnx files into")
	flag.Parse()
	if err := models.WriteAll(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
