package bedrock

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// memBody is an upstream call held in memory.
type memBody struct{}

func (memBody) Touch()                  {}
func (memBody) ReadErr(err error) error { return errors.Join(llm.ErrStreamCut, err) }
func (memBody) Close(bool)              {}

func encodeFrame(typ, event, payload string) []byte {
	var b bytes.Buffer
	m := eventstream.Message{Payload: []byte(payload)}
	m.Headers.Set(":message-type", eventstream.StringValue(typ))
	if typ == "exception" {
		m.Headers.Set(":exception-type", eventstream.StringValue(event))
	} else {
		m.Headers.Set(":event-type", eventstream.StringValue(event))
	}
	m.Headers.Set(":content-type", eventstream.StringValue("application/json"))
	eventstream.NewEncoder().Encode(&b, m)
	return b.Bytes()
}

// sampleStream is a ConverseStream answer: text, a tool call, the end.
func sampleStream() []byte {
	var b []byte
	b = append(b, encodeFrame("event", "messageStart", `{"role":"assistant"}`)...)
	b = append(b, encodeFrame("event", "contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"Hello"}}`)...)
	b = append(b, encodeFrame("event", "contentBlockStop", `{"contentBlockIndex":0}`)...)
	b = append(b, encodeFrame("event", "contentBlockStart", `{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"t1","name":"f"}}}`)...)
	b = append(b, encodeFrame("event", "contentBlockDelta", `{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"a\":1}"}}}`)...)
	b = append(b, encodeFrame("event", "messageStop", `{"stopReason":"tool_use"}`)...)
	b = append(b, encodeFrame("event", "metadata", `{"usage":{"inputTokens":3,"outputTokens":4,"totalTokens":7}}`)...)
	return b
}

// FuzzStream feeds arbitrary bytes to the ConverseStream translator as
// an event stream. It must not panic or loop; every chunk is sane JSON;
// an error repeats; io.EOF comes only after the finish chunk.
func FuzzStream(f *testing.F) {
	f.Add(sampleStream())
	f.Add(sampleStream()[:100])
	f.Add(encodeFrame("exception", "throttlingException", `{"message":"slow down"}`))
	f.Add(encodeFrame("event", "contentBlockDelta", `{"contentBlockIndex":99999,"delta":{"toolUse":{"input":"x"}}}`))
	f.Add(append(encodeFrame("event", "messageStart", `{}`), 0, 0, 0, 16, 0, 0, 0, 0, 1, 2, 3, 4))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newStream("bed", memBody{}, bytes.NewReader(data), "chatcmpl-1", "m", 1)
		finished := false
		for i := 0; ; i++ {
			if i > len(data)+8 {
				t.Fatal("the stream does not end")
			}
			c, err := s.Next()
			if err == io.EOF {
				if !finished {
					t.Fatal("io.EOF before the finish chunk")
				}
				return
			}
			if err != nil {
				var e *llm.Error
				if !errors.Is(err, llm.ErrStreamCut) && !errors.As(err, &e) {
					t.Fatalf("error of an unknown kind: %v", err)
				}
				if _, again := s.Next(); again != err {
					t.Fatalf("error %v, then %v", err, again)
				}
				return
			}
			if !strings.HasPrefix(c.ID, "chatcmpl-") {
				t.Fatalf("chunk id %q", c.ID)
			}
			for _, ch := range c.Choices {
				if ch.FinishReason != "" {
					finished = true
				}
			}
		}
	})
}

// FuzzParseError reads arbitrary error bodies.
func FuzzParseError(f *testing.F) {
	f.Add([]byte(`{"message":"Too many requests"}`))
	f.Add([]byte(`{"Message":"x"}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, b []byte) { ParseError(b) })
}

// FuzzRequest translates arbitrary chat requests: a 400 or a JSON body.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(hello))
	f.Add([]byte(toolReq))
	f.Fuzz(func(t *testing.T, b []byte) {
		chat, err := chatReq(string(b), false).ChatRequest()
		if err != nil {
			return
		}
		out, err := encodeRequest(chat, len(b))
		if err != nil {
			var e *llm.Error
			if !errors.As(err, &e) || e.Status != 400 {
				t.Fatalf("error %v", err)
			}
			return
		}
		if !bytes.HasPrefix(out, []byte(`{"messages":[`)) || !json.Valid(out) {
			t.Fatalf("not a Converse body: %s", out)
		}
	})
}

// FuzzDecodeResponse reads arbitrary Converse answers: a 502 or a
// completion that marshals.
func FuzzDecodeResponse(f *testing.F) {
	b, err := os.ReadFile("testdata/chat_response.converse.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"output":{"message":{"content":[{"text":"a"},{"toolUse":{"toolUseId":"t","name":"f","input":{ "a" : [1, "x y"] }}},{"toolUse":5},7]}},"usage":{"inputTokens":"3","outputTokens":2.9,"totalTokens":true}}`))
	f.Add([]byte(`{"output":{"message":{"content":{}}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		cc, err := decodeResponse("bed", body, "chatcmpl-1", "m", 1)
		if err != nil {
			var e *llm.Error
			if !errors.As(err, &e) || e.Status != 502 {
				t.Fatalf("err = %v", err)
			}
			return
		}
		if len(cc.Choices) != 1 || cc.Usage == nil {
			t.Fatalf("completion %+v", cc)
		}
		for _, tc := range cc.Choices[0].Message.ToolCalls {
			if !json.Valid([]byte(tc.Function.Arguments)) {
				t.Fatalf("arguments %q", tc.Function.Arguments)
			}
		}
		if _, err := json.Marshal(cc); err != nil {
			t.Fatal(err)
		}
	})
}
