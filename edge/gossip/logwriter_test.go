package gossip

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// An orderly shutdown logs no errors: memberlist's goroutines meeting the
// sockets Close shut are logged at debug level, and only once closing.
func TestLevelWriterClosedSocketAfterClose(t *testing.T) {
	var buf bytes.Buffer
	w := &levelWriter{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	line := "[ERR] memberlist: Failed to send gossip to 127.0.0.1:7412: write udp 127.0.0.1:7415->127.0.0.1:7412: use of closed network connection\n"
	w.Write([]byte(line))
	if !strings.Contains(buf.String(), "level=ERROR") {
		t.Fatalf("before Close, a closed socket is an error: %s", buf.String())
	}
	buf.Reset()
	w.closing.Store(true)
	w.Write([]byte(line))
	w.Write([]byte("[ERR] memberlist: something else broke\n"))
	out := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(out) != 2 || !strings.Contains(out[0], "level=DEBUG") || !strings.Contains(out[1], "level=ERROR") {
		t.Fatalf("after Close: want the closed socket at debug and other errors kept: %q", out)
	}
}
