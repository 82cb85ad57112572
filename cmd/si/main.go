// Command si is the SuperInstance cloud mesh's one binary. The commands live
// in internal/cli; this file only hands them the process.
package main

import (
	"os"

	"github.com/superinstance/mesh/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
