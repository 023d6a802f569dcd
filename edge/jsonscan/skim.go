package jsonscan

import "bytes"

// The skim finds top-level members of big bodies without checking them:
// the gateway's trace and the openai adapter read one to three members of
// bodies that can hold thousands of numbers (embeddings), which a checked
// walk would read at many times the cost.

// skimStop marks the bytes a skim stops at: quotes, backslashes and
// brackets.
var skimStop = func() (t [256]bool) {
	for _, c := range `"\[]{}` {
		t[c] = true
	}
	return t
}()

// EachMember calls each with the key (escapes in place) and value bytes
// of every top-level member of the object in data, until it returns
// false. It skims: values are delimited by counting brackets outside
// strings, not checked, so a lookup of one late member (usage, after an
// embeddings answer's thousands of numbers) costs what gjson's path
// lookup cost, not a validating walk. What it hands over is checked by
// the jsonscan reader that reads it. A malformed object ends the walk.
//
// EachMember does not validate: it accepts bytes that are not JSON (a
// value such as tru or 1x2, a key with a bad escape, an object left
// unclosed after the member it stops at) and hands over values that may
// be malformed. Read what it hands over with a Scanner, which checks;
// never pass it on as JSON unchecked. Keys are raw (escapes left in).
func EachMember(data []byte, each func(key, value []byte) bool) {
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

// Member returns the value of the first top-level member named key in
// the object in data, skimmed as EachMember skims: unchecked, so read
// it with a Scanner. The key is compared raw (escapes not decoded).
func Member(data []byte, key string) (value []byte, ok bool) {
	EachMember(data, func(k, v []byte) bool {
		if string(k) == key {
			value, ok = v, true
			return false
		}
		return true
	})
	return value, ok
}
