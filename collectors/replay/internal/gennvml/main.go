// Command gennvml writes package replay's player_gen.go and recorder_gen.go
// from the table in internal/nvmlcalls. `go generate ./collectors/replay/`
// runs it in that package's directory; -dir writes elsewhere.
package main

import (
	"flag"
	"log"

	"github.com/gpuwarden/gpuwarden/collectors/replay/internal/nvmlcalls"
)

func main() {
	dir := flag.String("dir", ".", "directory to write the generated files into")
	flag.Parse()
	if err := nvmlcalls.Write(*dir); err != nil {
		log.Fatalf("gennvml: %v", err)
	}
}
