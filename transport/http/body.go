package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// MaxJSONDepth is the deepest nesting of objects and arrays a request body
// may have (LibreFang's guard uses the same number).
const MaxJSONDepth = 32

// decodeJSON reads the request body into v. It refuses a wrong content
// type (415), an empty, malformed or too deep body, unknown fields and
// trailing data (400), naming what was wrong.
func decodeJSON(ctx *fasthttp.RequestCtx, v any) error {
	if err := checkJSONContentType(ctx); err != nil {
		return err
	}
	return decodeJSONBytes(ctx.PostBody(), v)
}

func checkJSONContentType(ctx *fasthttp.RequestCtx) error {
	ct := string(ctx.Request.Header.ContentType())
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return &apiError{fasthttp.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json"}
	}
	return nil
}

func decodeJSONBytes(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("invalid_json", "request body is empty; a JSON object is required")
	}
	if depth := jsonDepth(body); depth > MaxJSONDepth {
		return badRequest("json_too_deep", fmt.Sprintf("JSON nesting depth exceeds %d", MaxJSONDepth))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(jsonErrorCode(err), jsonErrorMessage(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("invalid_json", "request body has data after the JSON value")
	}
	return nil
}

// jsonDepth returns the maximum nesting depth of objects and arrays,
// ignoring brackets inside strings. It stops counting at MaxJSONDepth+1.
func jsonDepth(b []byte) int {
	depth, maxDepth, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > maxDepth {
				maxDepth = depth
				if maxDepth > MaxJSONDepth {
					return maxDepth
				}
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return maxDepth
}

func jsonErrorCode(err error) string {
	if strings.HasPrefix(err.Error(), "json: unknown field") {
		return "unknown_field"
	}
	return "invalid_json"
}

func jsonErrorMessage(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("malformed JSON at byte %d: %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("field %q must be %s, not %s", typ.Field, typ.Type, typ.Value)
		}
		return fmt.Sprintf("body must be %s, not %s", typ.Type, typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: unexpected end of body"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return "malformed JSON: " + err.Error()
}

// intQuery parses an optional integer query parameter within [lo, hi].
// The first name present wins, so aliases (limit, n) share one rule.
func intQuery(ctx *fasthttp.RequestCtx, def, lo, hi int, names ...string) (int, error) {
	args := ctx.QueryArgs()
	for _, name := range names {
		if !args.Has(name) {
			continue
		}
		raw := string(args.Peek(name))
		n, err := strconv.Atoi(raw)
		if err != nil {
			return 0, badRequest("invalid_query", fmt.Sprintf("query parameter %q must be an integer, got %q", name, raw))
		}
		if n < lo || n > hi {
			return 0, badRequest("invalid_query", fmt.Sprintf("query parameter %q must be between %d and %d, got %d", name, lo, hi, n))
		}
		return n, nil
	}
	return def, nil
}
