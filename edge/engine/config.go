package engine

import (
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures the local engine: the `local` section of an edge's
// config file.
type Config struct {
	// Enabled turns the local engine on.
	Enabled bool `yaml:"enabled"`
	// Binary is the ollama executable the edge starts. Default "ollama",
	// looked up in PATH; `make ollama` builds one into bin/ollama.
	Binary string `yaml:"binary"`
	// URL attaches to an Ollama that already runs, such as
	// "http://127.0.0.1:11434", instead of starting one. The edge then
	// neither starts nor restarts it; it still creates and warms the
	// models below.
	URL string `yaml:"url"`
	// DataDir holds the supervised Ollama's home folder and its models,
	// and the record of which file and quantization each local model was
	// created from. Each edge needs its own: Ollamas that share a models
	// folder prune each other's blobs. Default ".meridian/ollama".
	DataDir string `yaml:"data_dir"`
	// NumParallel is OLLAMA_NUM_PARALLEL: requests one loaded model
	// serves at once. Default 1.
	NumParallel int `yaml:"num_parallel"`
	// NumThread is the CPU threads one generation uses (Ollama's
	// num_thread). Zero leaves Ollama's choice; on small machines 1 is
	// often faster (2.5x on a 2-core host), because generation is
	// memory-bound and threads fight over the cores.
	NumThread int `yaml:"num_thread"`
	// KeepAlive is how long a model stays loaded after its last request.
	// Negative keeps models loaded for good. Default -1ns (for good):
	// models placed on an edge are there to answer at once.
	KeepAlive time.Duration `yaml:"keep_alive"`
	// Queue is the number of requests that may wait for a free slot
	// beyond the NumParallel running ones. A request arriving when the
	// queue is full gets a 429 with Retry-After (and fails over when the
	// route has another target). Default 16.
	Queue int `yaml:"queue"`
	// StartTimeout bounds the wait for a started Ollama to listen.
	// Default 30s.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// RestartBackoff is the first wait before restarting an Ollama that
	// died; it doubles on each failure in a row, up to MaxRestartBackoff.
	// Defaults 250ms and 30s.
	RestartBackoff    time.Duration `yaml:"restart_backoff"`
	MaxRestartBackoff time.Duration `yaml:"max_restart_backoff"`
	// HandoffTimeout bounds how long a model stays loaded, and keeps
	// serving, after the node loses its placement: make before break.
	// The node unloads it as soon as a node the model is now placed on
	// has it ready (Release), or when this much time has passed. Zero
	// unloads at once. Default 2m.
	HandoffTimeout time.Duration `yaml:"handoff_timeout"`
	// Models are the models placed on this node when it starts. Place
	// replaces the set at run time, as the control plane places models.
	Models []Model `yaml:"models"`
	// Registerer receives the engine's metrics (meridian_local_*); nil
	// registers none. Set in code, never in the config file.
	Registerer prometheus.Registerer `yaml:"-"`
}

// Model is a model the engine makes sure exists and keeps warm.
type Model struct {
	// Name is the model's name in Ollama, such as "tiny" or
	// "llama3.2:1b". Routes name it as their local target's model, and
	// when no route serves a model of this name the edge adds one.
	Name string `yaml:"name"`
	// GGUF is a GGUF file to create the model from. It is checked before
	// Ollama sees it: a malformed file can crash Ollama's create.
	GGUF string `yaml:"gguf"`
	// Quantize is the quantization Ollama applies when creating from
	// GGUF: "q8_0", "q4_K_M", "q4_K_S" or "" to keep the file's. The
	// source must be F16 or BF16 to be quantized.
	Quantize string `yaml:"quantize"`
	// Pull fetches the model by name from a registry when it is absent
	// and no GGUF is given.
	Pull bool `yaml:"pull"`
}

// DefaultConfig returns the engine defaults (disabled).
func DefaultConfig() Config {
	return Config{
		Binary:            "ollama",
		DataDir:           ".meridian/ollama",
		NumParallel:       1,
		KeepAlive:         -1,
		Queue:             16,
		StartTimeout:      30 * time.Second,
		HandoffTimeout:    2 * time.Minute,
		RestartBackoff:    250 * time.Millisecond,
		MaxRestartBackoff: 30 * time.Second,
	}
}

var modelName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*(:[A-Za-z0-9._-]+)?$`)

// Quantizations Ollama's create path accepts, as Meridian offers them.
var quantizations = []string{"", "q8_0", "q4_K_M", "q4_K_S", "q4_0", "q4_1", "q5_K_M", "q5_K_S", "q6_K"}

// Validate checks c. Errors are *table.FieldError on "local.<field>".
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &table.FieldError{Field: "local." + field, Msg: fmt.Sprintf(format, args...)}
	}
	if !c.Enabled {
		return nil
	}
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("url", "must be an http:// or https:// URL of a running Ollama, got %q", c.URL)
		}
	} else if c.Binary == "" {
		return bad("binary", "is required unless url is set")
	}
	if c.DataDir == "" {
		return bad("data_dir", "is required")
	}
	if c.NumParallel < 1 || c.NumParallel > 64 {
		return bad("num_parallel", "must be from 1 to 64, got %d", c.NumParallel)
	}
	if c.NumThread < 0 || c.NumThread > 1024 {
		return bad("num_thread", "must be from 0 (Ollama's choice) to 1024, got %d", c.NumThread)
	}
	if c.Queue < 0 {
		return bad("queue", "must not be negative")
	}
	if c.StartTimeout <= 0 {
		return bad("start_timeout", "must be positive")
	}
	if c.HandoffTimeout < 0 {
		return bad("handoff_timeout", "must not be negative")
	}
	if c.RestartBackoff <= 0 || c.MaxRestartBackoff < c.RestartBackoff {
		return bad("restart_backoff", "must be positive and at most max_restart_backoff")
	}
	seen := map[string]bool{}
	for i, m := range c.Models {
		field := fmt.Sprintf("models[%d]", i)
		if seen[m.Name] {
			return bad(field+".name", "duplicate model %q", m.Name)
		}
		seen[m.Name] = true
		if sub, msg := m.check(); msg != "" {
			return bad(field+sub, "%s", msg)
		}
	}
	return nil
}

// check reports what is wrong with m, if anything: the field, relative
// to the model ("" for the model itself, ".name", ".quantize"), and why.
// Config.Validate and Place share it.
func (m Model) check() (field, msg string) {
	if !modelName.MatchString(m.Name) {
		return ".name", fmt.Sprintf("must be an Ollama model name such as \"tiny\" or \"llama3.2:1b\", got %q", m.Name)
	}
	if m.GGUF == "" && !m.Pull {
		return "", fmt.Sprintf("needs a gguf file to create %q from, or pull: true", m.Name)
	}
	if m.GGUF != "" && m.Pull {
		return "", "gguf and pull exclude each other"
	}
	ok := false
	for _, q := range quantizations {
		ok = ok || q == m.Quantize
	}
	if !ok {
		return ".quantize", fmt.Sprintf("unknown quantization %q (known: q8_0, q4_K_M, q4_K_S, q4_0, q4_1, q5_K_M, q5_K_S, q6_K)", m.Quantize)
	}
	if m.Quantize != "" && m.GGUF == "" {
		return ".quantize", "applies only when creating from gguf"
	}
	return "", ""
}

// modelNames returns the names of the placed models.
func (c *Config) modelNames() []string {
	out := make([]string, len(c.Models))
	for i, m := range c.Models {
		out[i] = m.Name
	}
	return out
}
