package http

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestJSONDepth(t *testing.T) {
	t.Parallel()
	cases := map[string]int{
		`{}`:                     1,
		`{"a":[1,{"b":2}]}`:      3,
		`{"a":"[[[[{{{{"}`:       1,
		`{"a":"\"[[["}`:          1,
		`[[[]]]`:                 3,
		`"plain"`:                0,
		strings.Repeat("[", 100): MaxJSONDepth + 1,
	}
	for in, want := range cases {
		if got := jsonDepth([]byte(in)); got != want {
			t.Errorf("jsonDepth(%.20q) = %d, want %d", in, got, want)
		}
	}
}

func TestDecodeAcceptsExactlyOneKnownObject(t *testing.T) {
	t.Parallel()
	var b levelBody
	if err := decodeJSONBytes([]byte(" {\"level\":\"info\"}\n"), &b); err != nil || b.Level != "info" {
		t.Fatalf("valid body: %v %+v", err, b)
	}
	atLimit := strings.Repeat(`{"a":`, MaxJSONDepth-1) + `{}` + strings.Repeat(`}`, MaxJSONDepth-1)
	var m map[string]any
	if err := decodeJSONBytes([]byte(atLimit), &m); err != nil {
		t.Fatalf("depth exactly %d refused: %v", MaxJSONDepth, err)
	}
}

// FuzzDecodeJSON checks the request body path: it never panics, anything it
// accepts is valid JSON within the depth cap, and it accepts no unknown
// field. Seeds live in testdata/fuzz/FuzzDecodeJSON too.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"level":"debug"}`, `{"level":"debug","x":1}`, `{"level":`, `[]`, `{"level":null}`,
		`{"level":"\u0000"}`, `{"level":"debug"} {}`, strings.Repeat("[", 40), `{"level":"a\"]]]"}`,
		"\xff\xfe", `{"LEVEL":"info"}`, `{"level":"info","level":"warn"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b levelBody
		err := decodeJSONBytes(body, &b)
		if err == nil {
			if !json.Valid(body) {
				t.Fatalf("accepted invalid JSON %q", body)
			}
			if jsonDepth(body) > MaxJSONDepth {
				t.Fatalf("accepted too-deep JSON %q", body)
			}
			var generic map[string]any
			if json.Unmarshal(body, &generic) == nil {
				for k := range generic {
					if !strings.EqualFold(k, "level") {
						t.Fatalf("accepted unknown field %q in %q", k, body)
					}
				}
			}
			return
		}
		if _, ok := err.(*apiError); !ok {
			t.Fatalf("rejection is not an API error: %T %v", err, err)
		}
	})
}
