package node

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nodeSDKDir holds the Node SDK tests and their package-lock.json.
const nodeSDKDir = "../../scripts/sdktest/node"

// TestNodeSDKs runs the official OpenAI and Anthropic Node SDKs (pinned in
// scripts/sdktest/node/package-lock.json, installed by .ci/run with npm ci)
// against an edge, with `node --test`. Outside CI it skips when Node or
// the packages are missing; in CI that is a failure.
func TestNodeSDKs(t *testing.T) {
	node := nodeBinary(t)
	m := startMesh(t, nil)
	runNodeSDKs(t, node, m.url, strings.Join(matrixModels(m), ","), nil)
}

// runNodeSDKs runs `node --test` on files (every test file when none)
// against the edge at url, with the chat models it names and env.
func runNodeSDKs(t *testing.T, node, url, models string, env []string, files ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{"--test", "--test-reporter=spec"}, files...)...)
	cmd.Dir = nodeSDKDir
	cmd.Env = append(append(os.Environ(), "MERIDIAN_URL="+url, "MERIDIAN_MODELS="+models), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "fail 0") || strings.Contains(string(out), "pass 0") {
		t.Fatalf("node --test reported failures:\n%s", out)
	}
	t.Logf("%s", out)
}

// nodeBinary returns node, or skips (fails in CI) when it or the SDK
// packages are missing.
func nodeBinary(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(nodeSDKDir, "node_modules", "openai"))
	}
	if err != nil {
		msg := "the Node SDK tests need node and `npm ci` in scripts/sdktest/node: " + err.Error()
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return node
}

// TestNodeSDKsOverLink: the Node SDK's Responses API against edge A,
// whose models edge B serves over the link.
func TestNodeSDKsOverLink(t *testing.T) {
	node := nodeBinary(t)
	p := startLinkPair(t)
	runNodeSDKs(t, node, p.a.url, "gpt-4o-mini,claude-mock", nil, "responses.test.mjs")
}

// matrixModels are the chat models the SDK tests run against, one per
// kind of upstream the mesh has.
func matrixModels(m *testMesh) []string {
	return []string{"gpt-4o-mini", "claude-mock", "gemini-mock", "llama-mock", "azure-mock", "bedrock-mock", "vertex-gemini-mock", "vertex-claude-mock"}
}
