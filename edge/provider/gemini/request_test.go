package gemini

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
)

func translate(t *testing.T, body string) ([]byte, error) {
	t.Helper()
	req := &llm.Request{Op: llm.OpChat, Body: []byte(body)}
	c, err := req.ChatRequest()
	if err != nil {
		t.Fatalf("body does not decode: %v", err)
	}
	return encodeRequest(c, len(body))
}

func TestEncodeRequest(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain",
			`{"messages":[{"role":"user","content":"hi \"you\"\n"}]}`,
			`{"contents":[{"role":"user","parts":[{"text":"hi \"you\"\n"}]}]}`},
		{"consecutive messages of one role merge, empty ones vanish",
			`{"messages":[{"role":"user","content":"a"},{"role":"user","content":[{"type":"text","text":"b"},{"type":"text","text":""}]},{"role":"assistant","content":""},{"role":"assistant","content":null},{"role":"assistant","content":"c"},{"role":"user","content":"d"}]}`,
			`{"contents":[{"role":"user","parts":[{"text":"a"},{"text":"b"}]},{"role":"model","parts":[{"text":"c"}]},{"role":"user","parts":[{"text":"d"}]}]}`},
		{"stop string, max_tokens, top_k absent, json_object",
			`{"messages":[{"role":"user","content":"x"}],"stop":"END","max_tokens":10,"response_format":{"type":"json_object"},"n":2,"temperature":0}`,
			`{"contents":[{"role":"user","parts":[{"text":"x"}]}],"generationConfig":{"stopSequences":["END"],"candidateCount":2,"maxOutputTokens":10,"temperature":0,"responseMimeType":"application/json"}}`},
		{"text response format adds nothing",
			`{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"text"}}`,
			`{"contents":[{"role":"user","parts":[{"text":"x"}]}]}`},
		{"tool choice none, no parameters",
			`{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"}`,
			`{"contents":[{"role":"user","parts":[{"text":"x"}]}],"tools":[{"functionDeclarations":[{"name":"f"}]}],"toolConfig":{"functionCallingConfig":{"mode":"NONE"}}}`},
		{"tool choice required",
			`{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":null}}],"tool_choice":"required"}`,
			`{"contents":[{"role":"user","parts":[{"text":"x"}]}],"tools":[{"functionDeclarations":[{"name":"f"}]}],"toolConfig":{"functionCallingConfig":{"mode":"ANY"}}}`},
		{"tool choice auto",
			`{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto"}`,
			`{"contents":[{"role":"user","parts":[{"text":"x"}]}],"tools":[{"functionDeclarations":[{"name":"f"}]}],"toolConfig":{"functionCallingConfig":{"mode":"AUTO"}}}`},
		{"tool choice without tools is dropped",
			`{"messages":[{"role":"user","content":"x"}],"tool_choice":"required"}`,
			`{"contents":[{"role":"user","parts":[{"text":"x"}]}]}`},
		{"tool call without arguments, tool result that is not an object, deprecated function role",
			`{"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":""}}]},{"role":"tool","tool_call_id":"c1","content":[{"type":"text","text":"[1,2]"}]},{"role":"function","name":"g","content":"{\"ok\":true}"}]}`,
			`{"contents":[{"role":"user","parts":[{"text":"x"}]},{"role":"model","parts":[{"functionCall":{"name":"f","args":{}},"thoughtSignature":"skip_thought_signature_validator"}]},{"role":"user","parts":[{"functionResponse":{"name":"f","response":{"content":"[1,2]"}}},{"functionResponse":{"name":"g","response":{"ok":true}}}]}]}`},
		{"each assistant turn's first call carries the signature",
			`{"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"1"},{"role":"assistant","tool_calls":[{"id":"c2","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c2","content":"2"}]}`,
			`{"contents":[{"role":"user","parts":[{"text":"x"}]},{"role":"model","parts":[{"functionCall":{"name":"f","args":{}},"thoughtSignature":"skip_thought_signature_validator"}]},{"role":"user","parts":[{"functionResponse":{"name":"f","response":{"content":"1"}}}]},{"role":"model","parts":[{"functionCall":{"name":"f","args":{}},"thoughtSignature":"skip_thought_signature_validator"}]},{"role":"user","parts":[{"functionResponse":{"name":"f","response":{"content":"2"}}}]}]}`},
		{"media: audio, pdf, bare image_url string, unknown extension",
			`{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"UklGRg==","format":"wav"}},{"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0=","filename":"a.pdf"}},{"type":"image_url","image_url":"HTTPS://x.example/img"},{"type":"image_url","image_url":{"url":"data:image/jpeg;charset=x;base64,/9j/"}}]}]}`,
			`{"contents":[{"role":"user","parts":[{"inlineData":{"mimeType":"audio/wav","data":"UklGRg=="}},{"inlineData":{"mimeType":"application/pdf","data":"JVBERi0="}},{"fileData":{"mimeType":"image/jpeg","fileUri":"HTTPS://x.example/img"}},{"inlineData":{"mimeType":"image/jpeg","data":"/9j/"}}]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := translate(t, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			jsonEqual(t, "request", got, []byte(tt.want))
		})
	}
}

// TestEncodeTypedRequest covers requests another surface built: TopK has
// no OpenAI field and reaches Gemini only through the typed request.
func TestEncodeTypedRequest(t *testing.T) {
	k, topP := 40, 0.5
	c := &llm.ChatRequest{
		Messages: []llm.Message{
			{Role: llm.RoleSystem, Content: llm.TextContent("be brief")},
			{Role: llm.RoleUser, Content: llm.PartsContent([]llm.ContentPart{{Type: "text", Text: "<hi>\u2028"}})},
		},
		TopK: &k, TopP: &topP,
	}
	got, err := encodeRequest(c, 0)
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, "request", got, []byte(`{"systemInstruction":{"parts":[{"text":"be brief"}]},"contents":[{"role":"user","parts":[{"text":"<hi>\u2028"}]}],"generationConfig":{"topP":0.5,"topK":40}}`))
}

func TestEncodeRequestErrors(t *testing.T) {
	tests := []struct{ name, in, param string }{
		{"unknown tool call", `{"messages":[{"role":"user","content":"x"},{"role":"tool","tool_call_id":"c9","content":"r"}]}`, "messages[1].tool_call_id"},
		{"call answered before it was made", `{"messages":[{"role":"tool","tool_call_id":"c1","content":"r"},{"role":"assistant","tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{}"}}]}]}`, "messages[0].tool_call_id"},
		{"unknown role", `{"messages":[{"role":"robot","content":"x"}]}`, "messages[0].role"},
		{"arguments not an object", `{"messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":"[1]"}}]}]}`, "messages[0].tool_calls[0].function.arguments"},
		{"arguments not JSON", `{"messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{\"a\":"}}]}]}`, "messages[0].tool_calls[0].function.arguments"},
		{"call without a name", `{"messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"","arguments":"{}"}}]}]}`, "messages[0].tool_calls[0].function.name"},
		{"non-function tool", `{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search"}]}`, "tools[0].type"},
		{"tool choice names a missing function", `{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}`, "tool_choice"},
		{"ftp image", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]}`, "messages[0].content[0].image_url.url"},
		{"data URL not base64", `{"messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]}`, "messages[0].content[1].image_url.url"},
		{"unknown part", `{"messages":[{"role":"user","content":[{"type":"video","video":{}}]}]}`, "messages[0].content[0].type"},
		{"file by ID", `{"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]}`, "messages[0].content[0].file"},
		{"image in a system message", `{"messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]},{"role":"user","content":"x"}]}`, "messages[0].content[0].type"},
		{"content is a number", `{"messages":[{"role":"user","content":5}]}`, "messages[0].content"},
		{"nothing to send", `{"messages":[{"role":"system","content":"only a system prompt"}]}`, "messages"},
		{"image as a tool result", `{"messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`, "messages[1].content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := translate(t, tt.in)
			var e *llm.Error
			if !errors.As(err, &e) || e.Status != 400 || e.Type != llm.TypeInvalidRequest || e.Param != tt.param || e.Message == "" {
				t.Fatalf("err = %+v, want a 400 naming %s", err, tt.param)
			}
		})
	}
}

// TestEncodeRequestIsJSON checks the golden request's translation is
// compact enough to be one JSON value with no trailing bytes.
func TestEncodeRequestIsJSON(t *testing.T) {
	got, err := translate(t, string(golden(t, "chat_request.json")))
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(got) {
		t.Fatalf("not JSON: %s", got)
	}
}
