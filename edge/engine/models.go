package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/ollama/ollama/api"
)

// ensure makes sure model m exists in the Ollama at c, creating it from
// its GGUF file or pulling it, then loads it so the first request finds
// it warm. A model created from GGUF is created again when its file or
// quantization changed since: stateDir records what each was made from.
func ensure(ctx context.Context, c *api.Client, m Model, keep time.Duration, stateDir string, log *slog.Logger) error {
	log = log.With("model", m.Name)
	source, digest := "", ""
	if m.GGUF != "" {
		if err := CheckGGUF(m.GGUF); err != nil {
			return fmt.Errorf("model %s: %w", m.Name, err)
		}
		var err error
		if digest, err = fileDigest(m.GGUF); err != nil {
			return fmt.Errorf("model %s: %w", m.Name, err)
		}
		source = digest + " quantize=" + m.Quantize
	}
	record := filepath.Join(stateDir, "created", url.PathEscape(m.Name))
	_, err := c.Show(ctx, &api.ShowRequest{Model: m.Name})
	switch {
	case err == nil && (m.GGUF == "" || recorded(record) == source):
		log.Debug("local model present")
	case err != nil && !isNotFound(err):
		return fmt.Errorf("model %s: show: %w", m.Name, err)
	case m.GGUF != "":
		if err == nil {
			log.Info("local model: its GGUF file or quantization changed; creating it again")
		}
		if err := create(ctx, c, m, digest, log); err != nil {
			return err
		}
		os.MkdirAll(filepath.Dir(record), 0o700)
		if err := os.WriteFile(record, []byte(source), 0o600); err != nil {
			log.Warn("local model: cannot record its source; it will be created again on next start", "err", err)
		}
	default:
		progress := newProgress(log, "pull")
		if err := c.Pull(ctx, &api.PullRequest{Model: m.Name}, progress.update); err != nil {
			return fmt.Errorf("model %s: pull: %w", m.Name, err)
		}
	}
	return warm(ctx, c, m.Name, keep)
}

func recorded(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// create uploads m's GGUF as a blob (Ollama skips what it already has)
// and creates the model from it, quantizing on the way.
func create(ctx context.Context, c *api.Client, m Model, digest string, log *slog.Logger) error {
	f, err := os.Open(m.GGUF)
	if err != nil {
		return fmt.Errorf("model %s: %w", m.Name, err)
	}
	defer f.Close()
	start := time.Now()
	if err := c.CreateBlob(ctx, digest, f); err != nil {
		return fmt.Errorf("model %s: upload %s: %w", m.Name, m.GGUF, err)
	}
	log.Info("local model: creating", "gguf", m.GGUF, "quantize", m.Quantize, "digest", digest[:19])
	progress := newProgress(log, "create")
	req := &api.CreateRequest{Model: m.Name, Files: map[string]string{"model.gguf": digest}, Quantize: m.Quantize}
	if err := c.Create(ctx, req, progress.update); err != nil {
		return fmt.Errorf("model %s: create: %w", m.Name, err)
	}
	log.Info("local model: created", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// warm loads the model into memory with an empty generate request, which
// Ollama answers once the model is loaded.
func warm(ctx context.Context, c *api.Client, name string, keep time.Duration) error {
	stream := false
	d := api.Duration{Duration: keep}
	if keep == 0 {
		d.Duration = 5 * time.Minute
	}
	err := c.Generate(ctx, &api.GenerateRequest{Model: name, Stream: &stream, KeepAlive: &d}, func(api.GenerateResponse) error { return nil })
	if err != nil {
		return fmt.Errorf("model %s: load: %w", name, err)
	}
	return nil
}

// unload asks Ollama to drop the model from memory: an empty generate
// request with keep_alive 0, as Ollama's API defines it (and `ollama
// stop` sends). Ollama answers at once and unloads the model when its
// last request ends. A model Ollama does not know is not loaded either.
func unload(ctx context.Context, c *api.Client, name string) error {
	stream := false
	err := c.Generate(ctx, &api.GenerateRequest{Model: name, Stream: &stream, KeepAlive: &api.Duration{}}, func(api.GenerateResponse) error { return nil })
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("model %s: unload: %w", name, err)
	}
	return nil
}

func isNotFound(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.StatusCode == 404
}

// progress logs create and pull progress at most every few seconds, and
// every change of status.
type progress struct {
	log    *slog.Logger
	what   string
	status string
	last   time.Time
}

func newProgress(log *slog.Logger, what string) *progress {
	return &progress{log: log, what: what}
}

func (p *progress) step(status string, done, total int64) {
	if status == p.status && time.Since(p.last) < 5*time.Second {
		return
	}
	p.status, p.last = status, time.Now()
	if total > 0 {
		p.log.Info("local model: "+p.what, "status", status, "percent", done*100/total)
		return
	}
	p.log.Info("local model: "+p.what, "status", status)
}

// update is an api.CreateProgressFunc and an api.PullProgressFunc.
func (p *progress) update(r api.ProgressResponse) error {
	p.step(r.Status, r.Completed, r.Total)
	return nil
}
