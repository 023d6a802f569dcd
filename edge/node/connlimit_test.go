package node

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestMaxConnectionsRefused holds every allowed connection open: the
// next one is answered 503 with Retry-After, in OpenAI's error shape,
// and once one is closed a new connection is served again.
func TestMaxConnectionsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newLimitListener(ln, 2)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), ReadHeaderTimeout: time.Minute}
	go srv.Serve(l)
	defer srv.Close()
	get := func() (*http.Response, error) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
		}
		return resp, err
	}
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.open.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the held connections were not accepted")
		}
		time.Sleep(time.Millisecond)
	}
	resp, err := get()
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a connection over the limit got %v, %v; want 503 with Retry-After", resp, err)
	}
	held[0].Close()
	for {
		if resp, err := get(); err == nil && resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a connection was not served again after one closed")
		}
		time.Sleep(time.Millisecond)
	}
}
