package llm

import (
	"encoding/json"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
)

// Format names a wire format.
type Format string

// Wire formats Meridian speaks.
const (
	FormatOpenAI    Format = "openai"
	FormatAnthropic Format = "anthropic"
	FormatGemini    Format = "gemini"
	FormatOllama    Format = "ollama"
	// FormatResponses is OpenAI's Responses API (POST /v1/responses):
	// the format of a Responses client's request (Request.Native) and of
	// an answer an upstream that speaks it gave in it.
	FormatResponses Format = "openai-responses"
)

// Finish reasons, canonical (OpenAI's).
const (
	FinishStop          = "stop"
	FinishLength        = "length"
	FinishToolCalls     = "tool_calls"
	FinishContentFilter = "content_filter"
)

// finishTable is the one table of stop reasons. Each row is one canonical
// reason and what each format calls it; the first row of a canonical
// reason is what it becomes in that format, and every name in the table
// maps back. An empty cell means the format has no such name.
var finishTable = []struct {
	canonical string
	names     map[Format]string
}{
	{FinishStop, map[Format]string{FormatOpenAI: "stop", FormatAnthropic: "end_turn", FormatGemini: "STOP", FormatOllama: "stop"}},
	{FinishStop, map[Format]string{FormatAnthropic: "stop_sequence"}},
	{FinishStop, map[Format]string{FormatAnthropic: "pause_turn"}},
	{FinishLength, map[Format]string{FormatOpenAI: "length", FormatAnthropic: "max_tokens", FormatGemini: "MAX_TOKENS", FormatOllama: "length"}},
	{FinishLength, map[Format]string{FormatAnthropic: "model_context_window_exceeded"}},
	{FinishToolCalls, map[Format]string{FormatOpenAI: "tool_calls", FormatAnthropic: "tool_use", FormatGemini: "STOP", FormatOllama: "stop"}},
	{FinishToolCalls, map[Format]string{FormatOpenAI: "function_call"}},
	{FinishContentFilter, map[Format]string{FormatOpenAI: "content_filter", FormatAnthropic: "refusal", FormatGemini: "SAFETY"}},
	{FinishContentFilter, map[Format]string{FormatGemini: "RECITATION"}},
	{FinishContentFilter, map[Format]string{FormatGemini: "BLOCKLIST"}},
	{FinishContentFilter, map[Format]string{FormatGemini: "PROHIBITED_CONTENT"}},
	{FinishContentFilter, map[Format]string{FormatGemini: "SPII"}},
	{FinishContentFilter, map[Format]string{FormatGemini: "IMAGE_SAFETY"}},
	{FinishContentFilter, map[Format]string{FormatGemini: "IMAGE_PROHIBITED_CONTENT"}},
	{FinishContentFilter, map[Format]string{FormatGemini: "IMAGE_RECITATION"}},
}

// FinishFrom maps a format's stop reason to the canonical one. Unknown
// reasons map to "stop". Gemini and Ollama say "STOP"/"stop" for a turn
// that ends in tool calls too; adapters for them pass FinishToolCalls
// themselves when the answer holds calls.
func FinishFrom(f Format, reason string) string {
	if reason == "" {
		return ""
	}
	for _, row := range finishTable {
		if row.names[f] == reason {
			return row.canonical
		}
	}
	return FinishStop
}

// FinishTo maps a canonical stop reason to a format's.
func FinishTo(f Format, canonical string) string {
	if canonical == "" {
		return ""
	}
	for _, row := range finishTable {
		if row.canonical == canonical {
			if n := row.names[f]; n != "" {
				return n
			}
		}
	}
	return finishTable[0].names[f]
}

// Roles, canonical (OpenAI's).
const (
	RoleSystem    = "system"
	RoleDeveloper = "developer"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
)

// roleTable is the one table of message roles: what each format calls a
// canonical role. An empty cell means the format carries that role
// elsewhere: Anthropic and Gemini put system text in a field of its own,
// and Anthropic puts tool results in a user message.
var roleTable = map[string]map[Format]string{
	RoleSystem:    {FormatOpenAI: "system", FormatOllama: "system"},
	RoleDeveloper: {FormatOpenAI: "developer", FormatOllama: "system"},
	RoleUser:      {FormatOpenAI: "user", FormatAnthropic: "user", FormatGemini: "user", FormatOllama: "user"},
	RoleAssistant: {FormatOpenAI: "assistant", FormatAnthropic: "assistant", FormatGemini: "model", FormatOllama: "assistant"},
	RoleTool:      {FormatOpenAI: "tool", FormatAnthropic: "user", FormatGemini: "user", FormatOllama: "tool"},
}

// RoleTo maps a canonical role to a format's; "" means the format has no
// message role for it.
func RoleTo(f Format, canonical string) string { return roleTable[canonical][f] }

// RoleFrom maps a format's role to the canonical one.
func RoleFrom(f Format, role string) string {
	for _, canonical := range []string{RoleUser, RoleAssistant, RoleSystem, RoleTool} {
		if roleTable[canonical][f] == role {
			return canonical
		}
	}
	return role
}

// StopList returns stop sequences: "stop" may be a string or an array,
// whose elements that are not strings are left out.
func (c *ChatRequest) StopList() []string {
	s := jsonscan.New(c.Stop)
	switch s.Peek() {
	case jsonscan.String:
		return []string{s.Str()}
	case jsonscan.Array:
		var out []string
		s.Array(func(int) bool {
			if s.Peek() == jsonscan.String {
				out = append(out, s.Str())
			}
			return true
		})
		return out
	}
	return nil
}

// Tool choice modes.
const (
	ToolChoiceAuto     = "auto"
	ToolChoiceNone     = "none"
	ToolChoiceRequired = "required"
	ToolChoiceFunction = "function"
)

// ToolChoiceMode reads tool_choice: "auto" (also when absent), "none",
// "required", or "function" with the function's name.
func (c *ChatRequest) ToolChoiceMode() (mode, name string) {
	s := jsonscan.New(c.ToolChoice)
	switch s.Peek() {
	case jsonscan.String:
		switch v := s.Str(); v {
		case ToolChoiceNone, ToolChoiceRequired:
			return v, ""
		}
	case jsonscan.Object:
		// The first "function" member, and its first "name", count.
		var seenFn, seenName bool
		s.Object(func(k []byte) bool {
			if string(k) != "function" || seenFn {
				return true
			}
			seenFn = true
			if s.Peek() == jsonscan.Object {
				s.Object(func(k []byte) bool {
					if string(k) == "name" && !seenName {
						seenName = true
						if s.Peek() == jsonscan.String {
							name = s.Str()
						}
					}
					return true
				})
			}
			return false
		})
		if name != "" {
			return ToolChoiceFunction, name
		}
	}
	return ToolChoiceAuto, ""
}

// SetToolChoice sets tool_choice from a mode and, for "function", a name.
func (c *ChatRequest) SetToolChoice(mode, name string) {
	switch mode {
	case ToolChoiceFunction:
		b, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": name}})
		c.ToolChoice = b
	case "":
		c.ToolChoice = nil
	default:
		c.ToolChoice, _ = json.Marshal(mode)
	}
}
