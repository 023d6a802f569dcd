// Command tinymodel writes Meridian's tiny deterministic GGUF test model.
//
//	go run ./scripts/tinymodel -o bin/tiny.gguf [-variant chain|repeat]
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/meridian-mesh/meridian/shared/testkit/tinygguf"
)

type config struct {
	out string
	opt tinygguf.Options
}

func main() {
	cfg := config{opt: tinygguf.DefaultOptions()}
	flag.StringVar(&cfg.out, "o", "tiny.gguf", "output file")
	flag.StringVar(&cfg.opt.Variant, "variant", cfg.opt.Variant, "successor map: chain (abc…z abc…) or repeat (one token forever)")
	flag.StringVar(&cfg.opt.Name, "name", cfg.opt.Name, "general.name")
	flag.Parse()
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "tinymodel:", err)
		os.Exit(1)
	}
}

// run writes to a temporary file beside the output and renames it, so a
// reader never sees a half-written model.
func run(cfg config) error {
	if err := cfg.opt.Validate(); err != nil {
		return err
	}
	dir := filepath.Dir(cfg.out)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tiny-*.gguf")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := tinygguf.Write(f, cfg.opt); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), cfg.out)
}
