package ollama

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

// memTransport answers every request with body, from memory, so stream
// parsing is measured without a network.
type memTransport struct{ body []byte }

func (m memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"application/x-ndjson"}},
		Body:    io.NopCloser(bytes.NewReader(m.body)),
		Request: r,
	}, nil
}

func memAdapter(body []byte) *Adapter {
	a, err := New(table.Provider{ID: "mem", Kind: table.KindOllama, BaseURL: "http://ollama.invalid", ChunkTimeout: time.Minute})
	if err != nil {
		panic(err)
	}
	a.up.Client().Transport = memTransport{body}
	return a
}

// request4K is a ~4 KB chat request: a long system prompt, a few turns,
// a tool call and its result, and two tools.
func request4K() []byte {
	system := strings.Repeat("You are a careful assistant for a weather service. Answer briefly, cite the tool you used, and never invent data. ", 16)
	return []byte(fmt.Sprintf(`{"model":"local-llama","stream":true,"temperature":0.3,"top_p":0.95,"max_tokens":512,"stop":["\n\nUser:"],
"messages":[
{"role":"system","content":%q},
{"role":"user","content":"Hello! I am planning a trip next week and would like to know what to pack. Where should I start?"},
{"role":"assistant","content":"Tell me where you are going and when, and I will look up the forecast for you."},
{"role":"user","content":"Toronto, from Monday to Thursday. Also, what time is it there right now?"},
{"role":"assistant","content":null,"tool_calls":[
 {"id":"call_w1","type":"function","function":{"name":"get_current_weather","arguments":"{\"location\":\"Toronto, ON\",\"format\":\"celsius\"}"}},
 {"id":"call_t1","type":"function","function":{"name":"get_time","arguments":"{\"timezone\":\"America/Toronto\"}"}}]},
{"role":"tool","tool_call_id":"call_w1","content":"{\"temperature\":21,\"conditions\":\"sunny\",\"humidity\":0.41,\"wind_kph\":12,\"forecast\":[{\"day\":\"Mon\",\"high\":22,\"low\":13},{\"day\":\"Tue\",\"high\":19,\"low\":11},{\"day\":\"Wed\",\"high\":17,\"low\":9},{\"day\":\"Thu\",\"high\":20,\"low\":12}]}"},
{"role":"tool","tool_call_id":"call_t1","content":"14:05 EDT"},
{"role":"assistant","content":"It is 14:05 in Toronto and 21 °C and sunny. The week cools to 17 °C by Wednesday, with lows near 9 °C: pack layers, a light jacket and an umbrella just in case."},
{"role":"user","content":"Great. Will I need a warmer coat for the evenings, and is rain likely on any of those days? Please be specific."}],
"tools":[
 {"type":"function","function":{"name":"get_current_weather","description":"Get the current weather and a four-day forecast for a location","parameters":{"type":"object","properties":{"location":{"type":"string","description":"The location to get the weather for, e.g. San Francisco, CA"},"format":{"type":"string","description":"The unit to return temperatures in","enum":["celsius","fahrenheit"]}},"required":["location","format"]}}},
 {"type":"function","function":{"name":"get_time","description":"Get the local time in an IANA time zone","parameters":{"type":"object","properties":{"timezone":{"type":"string","description":"An IANA time zone name such as Europe/Paris"}},"required":["timezone"]}}}]}`, system))
}

// BenchmarkEncodeChat measures translating a decoded 4 KB request.
func BenchmarkEncodeChat(b *testing.B) {
	req := &llm.Request{Op: llm.OpChat, Model: "local-llama", Stream: true, Body: request4K()}
	c, err := req.ChatRequest()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(req.Body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeChat(make([]byte, 0, len(req.Body)+512), c, "llama3.2:3b", true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTranslateRequest adds decoding the OpenAI body into the
// typed request, which the OpenAI surface leaves to the adapter.
func BenchmarkTranslateRequest(b *testing.B) {
	body := request4K()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req := &llm.Request{Op: llm.OpChat, Model: "local-llama", Stream: true, Body: body} // as the OpenAI surface hands it over
		c, err := req.ChatRequest()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := encodeChat(make([]byte, 0, len(req.Body)+512), c, "llama3.2:3b", true); err != nil {
			b.Fatal(err)
		}
	}
}

// stream200 is a 200-line Ollama stream: 199 text pieces and the done line.
func stream200() []byte {
	var b bytes.Buffer
	for i := range 199 {
		fmt.Fprintf(&b, `{"model":"llama3.2:3b","created_at":"2025-05-27T22:54:57.%06dZ","message":{"role":"assistant","content":" token%d"},"done":false}`+"\n", i, i)
	}
	b.WriteString(`{"model":"llama3.2:3b","created_at":"2025-05-27T22:54:58.1Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":199,"eval_duration":4535599000}` + "\n")
	return b.Bytes()
}

// BenchmarkTranslateChunk reads a 200-line stream from memory; ns/chunk is the
// translation cost per upstream line (the request round trip through
// the in-memory transport is included, spread over the chunks).
func BenchmarkTranslateChunk(b *testing.B) {
	a := memAdapter(stream200())
	req := &llm.Request{Op: llm.OpChat, Model: "m", Stream: true, Chat: &llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: llm.TextContent("hi")}}}}
	ctx := context.Background()
	chunks := 0
	b.ReportAllocs()
	for b.Loop() {
		resp, err := a.Do(ctx, req, "m")
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := resp.Stream.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			chunks++
		}
		resp.Stream.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(chunks), "ns/chunk")
}
