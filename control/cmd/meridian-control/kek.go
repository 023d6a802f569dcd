package main

import (
	"fmt"
	"os"

	"github.com/meridian-mesh/meridian/control/seal"
)

// loadKEK reads the key-encryption key from a file, or else from
// MERIDIAN_CONTROL_KEK; neither means none.
func loadKEK(file string, getenv func(string) string) ([]byte, error) {
	s := getenv("MERIDIAN_CONTROL_KEK")
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("kek: %w", err)
		}
		s = string(b)
	}
	if s == "" {
		return nil, nil
	}
	k, err := seal.ParseKEK(s)
	if err != nil {
		return nil, fmt.Errorf("kek: %w", err)
	}
	return k, nil
}
