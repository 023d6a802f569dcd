package openai

import (
	"bytes"
	"math"
	"strconv"
	"strings"

	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// The readers here take what the adapter needs from an upstream's
// answer, error or stream event in one jsonscan pass, each in document
// order. They read what gjson's path lookups read before them: the
// first member of a name wins, a member of the wrong kind counts as
// absent, and bytes the upstream broke are read up to the break (the
// answer itself still reaches the client unchanged).

// The usage members already read: the first of a name wins.
const (
	seenPrompt = 1 << iota
	seenCompletion
	seenTotal
)

// readUsage reads a usage object (OpenAI's prompt_tokens,
// completion_tokens, total_tokens).
func readUsage(s *jsonscan.Scanner) llm.Usage {
	var u llm.Usage
	seen := 0
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "prompt_tokens":
			u.PromptTokens, seen = firstInt(s, seen, seenPrompt, u.PromptTokens)
		case "completion_tokens":
			u.CompletionTokens, seen = firstInt(s, seen, seenCompletion, u.CompletionTokens)
		case "total_tokens":
			u.TotalTokens, seen = firstInt(s, seen, seenTotal, u.TotalTokens)
		}
		return true
	})
	return u
}

// readResponsesUsage reads a Responses usage object (input_tokens,
// output_tokens); the total is their sum.
func readResponsesUsage(s *jsonscan.Scanner) llm.Usage {
	var in, out int
	seen := 0
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "input_tokens":
			in, seen = firstInt(s, seen, seenPrompt, in)
		case "output_tokens":
			out, seen = firstInt(s, seen, seenCompletion, out)
		}
		return true
	})
	return llm.Usage{PromptTokens: in, CompletionTokens: out, TotalTokens: in + out}
}

func firstInt(s *jsonscan.Scanner, seen, bit, cur int) (int, int) {
	if seen&bit != 0 {
		return cur, seen
	}
	return int(lenientInt(s)), seen | bit
}

// lenientInt reads a token count as the adapter always has (it was
// gjson's Result.Int): a number exactly when it is an integer, else
// truncated towards zero and clamped; a string holding a number as
// that number; true as 1; anything else as 0.
func lenientInt(s *jsonscan.Scanner) int64 {
	switch s.Peek() {
	case jsonscan.Number:
		return numberInt(string(s.Raw()))
	case jsonscan.String:
		str := s.Str()
		if len(str) > 0 && (str[0] == '-' || str[0] >= '0' && str[0] <= '9') && strings.IndexFunc(str[1:], notDigit) < 0 && str != "-" {
			return numberInt(str)
		}
		if f, err := strconv.ParseFloat(str, 64); err == nil {
			return clampInt(f)
		}
	case jsonscan.Bool:
		if s.Bool() {
			return 1
		}
	default:
		s.Skip()
	}
	return 0
}

func notDigit(r rune) bool { return r < '0' || r > '9' }

// numberInt reads a number's text: exactly when it is an integer that
// fits, else as a float truncated and clamped.
func numberInt(text string) int64 {
	if n, err := strconv.ParseInt(text, 10, 64); err == nil {
		return n
	}
	f, _ := strconv.ParseFloat(text, 64)
	return clampInt(f)
}

func clampInt(f float64) int64 {
	switch {
	case f >= math.MaxInt64:
		return math.MaxInt64
	case f < math.MinInt64:
		return math.MinInt64
	}
	return int64(f)
}

// skimStop marks the bytes a skim stops at: quotes, backslashes and
// brackets.
var skimStop = func() (t [256]bool) {
	for _, c := range `"\[]{}` {
		t[c] = true
	}
	return t
}()

// eachMember calls each with the key (escapes in place) and value bytes
// of every top-level member of the object in data, until it returns
// false. It skims: values are delimited by counting brackets outside
// strings, not checked, so a lookup of one late member (usage, after an
// embeddings answer's thousands of numbers) costs what gjson's path
// lookup cost, not a validating walk. What it hands over is checked by
// the jsonscan reader that reads it. A malformed object ends the walk.
func eachMember(data []byte, each func(key, value []byte) bool) {
	i := skimSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return
	}
	for i++; ; {
		i = skimSpace(data, i)
		if i >= len(data) || data[i] != '"' {
			return
		}
		end := skimString(data, i)
		if end < 0 {
			return
		}
		key := data[i+1 : end-1]
		if i = skimSpace(data, end); i >= len(data) || data[i] != ':' {
			return
		}
		start := skimSpace(data, i+1)
		if i = skimValue(data, start); i < 0 {
			return
		}
		if !each(key, data[start:i]) {
			return
		}
		if i = skimSpace(data, i); i >= len(data) || data[i] != ',' {
			return
		}
		i++
	}
}

func skimSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skimString returns the offset after the string that opens at i, or -1.
// It looks for each quote with bytes.IndexByte; one after an odd run of
// backslashes is escaped.
func skimString(data []byte, i int) int {
	for i++; ; i++ {
		j := bytes.IndexByte(data[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		k := i - 1
		for data[k] == '\\' { // the opening quote ends the run
			k--
		}
		if (i-1-k)%2 == 0 {
			return i + 1
		}
	}
}

// skimPlain returns the offset of the first byte from i that skimStop
// marks, or len(data), eight bytes a step where it can.
func skimPlain(data []byte, i int) int {
	for ; i+8 <= len(data); i += 8 {
		b := data[i : i+8 : i+8]
		if skimStop[b[0]] || skimStop[b[1]] || skimStop[b[2]] || skimStop[b[3]] ||
			skimStop[b[4]] || skimStop[b[5]] || skimStop[b[6]] || skimStop[b[7]] {
			break
		}
	}
	for i < len(data) && !skimStop[data[i]] {
		i++
	}
	return i
}

// skimValue returns the offset after the value that starts at i, or -1.
func skimValue(data []byte, i int) int {
	if i >= len(data) {
		return -1
	}
	switch data[i] {
	case '"':
		return skimString(data, i)
	case '{', '[':
		depth := 0
		for i < len(data) {
			i = skimPlain(data, i)
			if i >= len(data) {
				break
			}
			switch data[i] {
			case '"':
				if i = skimString(data, i); i < 0 {
					return -1
				}
				continue
			case '\\':
				return -1
			case '{', '[':
				depth++
			default:
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	}
	for i < len(data) {
		switch data[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// member returns the value of the first top-level member named key.
func member(data []byte, key string) (value []byte, ok bool) {
	eachMember(data, func(k, v []byte) bool {
		if string(k) == key {
			value, ok = v, true
			return false
		}
		return true
	})
	return value, ok
}
