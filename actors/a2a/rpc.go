package a2a

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/a2aproject/a2a-go/v2/a2a"
	"github.com/a2aproject/a2a-go/v2/a2acompat/a2av0"
	"github.com/a2aproject/a2a-go/v2/a2asrv"
)

// JSONRPC is the JSON-RPC binding for one local agent (or the shared
// endpoint when agentID is empty), as an http.Handler built from the SDK's
// handlers: 1.0 method names ("SendMessage") go to the 1.0 handler, 0.3
// names ("message/send") to the a2av0 one, both over the same actors, and
// LibreFang's draft "tasks/send" is answered in its own shape. An
// A2A-Version header naming a version fangd does not speak is answered
// with the spec's VersionNotSupportedError.
func (s *Service) JSONRPC(agentID string) http.Handler {
	ih := &a2asrv.InterceptedHandler{Handler: s.Handler(agentID), Logger: s.slog}
	opts := []a2asrv.TransportOption{
		a2asrv.WithTransportKeepAlive(s.opts.StreamKeepAlive),
		a2asrv.WithTransportPanicHandler(func(r any) error {
			s.log.Error().Interface("panic", r).Msg("a2a: protocol handler panicked")
			return a2a.NewError(a2a.ErrInternalError, "internal error")
		}),
	}
	v1 := a2asrv.NewJSONRPCHandler(ih, opts...)
	v0 := a2av0.NewJSONRPCHandler(ih, opts...)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeRPCError(w, nil, a2a.ErrParseError, "could not read the request body")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var head struct {
			Method string `json:"method"`
			ID     any    `json:"id"`
		}
		_ = json.Unmarshal(body, &head) // a malformed body is the SDK's to answer
		if v := strings.TrimSpace(r.Header.Get(a2a.SvcParamVersion)); v != "" && !SupportedVersion(v) {
			writeRPCError(w, head.ID, a2a.ErrVersionNotSupported,
				"A2A-Version "+v+" is not supported; this server speaks 1.0 and 0.3")
			return
		}
		if head.Method == methodLibreFangSend {
			s.serveLibreFangSend(w, r, body, agentID)
			return
		}
		if strings.Contains(head.Method, "/") {
			v0.ServeHTTP(w, r)
			return
		}
		v1.ServeHTTP(w, r)
	})
}

// SupportedVersion reports whether an A2A-Version value ("Major.Minor") is
// one fangd speaks.
func SupportedVersion(v string) bool {
	switch v {
	case "1.0", "1", "0.3":
		return true
	}
	return strings.HasPrefix(v, "1.0.") || strings.HasPrefix(v, "0.3.")
}

// rpcCodes are the JSON-RPC codes of the errors fangd writes itself
// (A2A spec §5.4 and JSON-RPC 2.0).
var rpcCodes = map[error]int{
	a2a.ErrParseError:                   -32700,
	a2a.ErrInvalidRequest:               -32600,
	a2a.ErrMethodNotFound:               -32601,
	a2a.ErrInvalidParams:                -32602,
	a2a.ErrInternalError:                -32603,
	a2a.ErrServerError:                  -32000,
	a2a.ErrVersionNotSupported:          -32009,
	a2a.ErrTaskNotFound:                 -32001,
	a2a.ErrTaskNotCancelable:            -32002,
	a2a.ErrPushNotificationNotSupported: -32003,
	a2a.ErrUnsupportedOperation:         -32004,
	a2a.ErrUnsupportedContentType:       -32005,
	a2a.ErrInvalidAgentResponse:         -32006,
	a2a.ErrExtendedCardNotConfigured:    -32007,
	a2a.ErrExtensionSupportRequired:     -32008,
	a2a.ErrUnauthenticated:              -31401,
	a2a.ErrUnauthorized:                 -31403,
}

// RPCError is a JSON-RPC error response body.
type RPCError struct {
	JSONRPC string       `json:"jsonrpc"`
	ID      any          `json:"id"`
	Error   RPCErrorBody `json:"error"`
}

// RPCErrorBody is the error member of a JSON-RPC response.
type RPCErrorBody struct {
	Code    int            `json:"code"`
	Message string         `json:"message"`
	Data    map[string]any `json:"data,omitempty"`
}

// NewRPCError builds the body for kind (one of the a2a sentinel errors).
func NewRPCError(id any, kind error, msg string, data map[string]any) RPCError {
	code, ok := rpcCodes[kind]
	if !ok {
		code = -32603
	}
	return RPCError{JSONRPC: "2.0", ID: id, Error: RPCErrorBody{Code: code, Message: msg, Data: data}}
}

func writeRPCError(w http.ResponseWriter, id any, kind error, msg string) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(NewRPCError(id, kind, msg, nil))
}
