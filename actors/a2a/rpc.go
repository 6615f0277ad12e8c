package a2a

import (
	"bytes"
	"context"
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
func (s *Service) JSONRPC(agentID string) *RPCHandler {
	ih := &a2asrv.InterceptedHandler{Handler: s.Handler(agentID), Logger: s.slog}
	panicked := func(r any) error {
		s.log.Error().Interface("panic", r).Msg("a2a: protocol handler panicked")
		return a2a.NewError(a2a.ErrInternalError, "internal error")
	}
	opts := []a2asrv.TransportOption{
		a2asrv.WithTransportKeepAlive(s.opts.StreamKeepAlive),
		a2asrv.WithTransportPanicHandler(panicked),
	}
	v1 := a2asrv.NewJSONRPCHandler(ih, opts...)
	v0 := a2av0.NewJSONRPCHandler(ih, opts...)
	rh := &RPCHandler{ih: ih, panicked: panicked, replay: a2asrv.NewJSONRPCHandler(replayHandler{})}
	rh.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	return rh
}

// RPCHandler is the JSON-RPC binding of one endpoint: an http.Handler for
// every request, and SendMessage's shortcut (ServeSendMessage).
type RPCHandler struct {
	http.Handler
	ih       *a2asrv.InterceptedHandler
	panicked func(any) error
	// replay is the SDK's JSON-RPC handler over replayHandler: it writes a
	// shortcut's error exactly as the SDK writes the handler's errors.
	replay http.Handler
}

// rpcEnvelope is a JSON-RPC request as the SDK's handler reads it
// (jsonrpc.ServerRequest, internal to the SDK).
type rpcEnvelope struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
	ID      any             `json:"id"`
}

// rpcResult is a JSON-RPC success as the SDK's handler writes it
// (jsonrpc.ServerResponse without an error).
type rpcResult struct {
	JSONRPC string `json:"jsonrpc"`
	ID      any    `json:"id"`
	Result  any    `json:"result,omitempty"`
}

// ServeSendMessage answers a well-formed JSON-RPC 1.0 SendMessage without
// the SDK's transport, which read the body three times (the version check
// here, its envelope, then its params) and, mounted on fasthttp, needed a
// net/http request and response built around it. The protocol handler
// and its interceptors are the same; the answer is the bytes the SDK
// would write: a success is encoded as its handler encodes it, an error
// is written by the SDK itself (replay). header is the request's header
// (the SDK's service parameters). ok is false, with nothing done, for
// every other request: another method, the 0.3 or LibreFang spelling, a
// body the SDK would refuse or read differently, an unsupported
// A2A-Version; serve those with the Handler.
func (h *RPCHandler) ServeSendMessage(ctx context.Context, body []byte, header http.Header) (answer []byte, ok bool) {
	var env rpcEnvelope
	if json.Unmarshal(body, &env) != nil || env.Method != "SendMessage" || env.JSONRPC != "2.0" {
		return nil, false
	}
	switch env.ID.(type) {
	case nil, string, float64: // jsonrpc.IsValidID
	default:
		return nil, false
	}
	if v := strings.TrimSpace(header.Get(a2a.SvcParamVersion)); v != "" && !SupportedVersion(v) {
		return nil, false
	}
	var req a2a.SendMessageRequest
	if json.Unmarshal(env.Params, &req) != nil {
		return nil, false
	}
	ctx, _ = a2asrv.NewCallContext(ctx, a2asrv.NewServiceParams(header))
	res, err := h.sendMessage(ctx, &req)
	if err == nil {
		var out []byte
		if task, ok := res.(*a2a.Task); ok {
			out, err = appendTaskAnswer(make([]byte, 0, 1024), env.ID, task)
		} else {
			out, err = json.Marshal(rpcResult{JSONRPC: "2.0", ID: env.ID, Result: a2a.StreamResponse{Event: res}})
		}
		if err == nil {
			return append(out, '\n'), true // json.Encoder's newline
		}
	}
	rec := &errorRecorder{header: http.Header{}}
	r := &http.Request{Method: http.MethodPost, Header: header, Body: io.NopCloser(bytes.NewReader(body))}
	h.replay.ServeHTTP(rec, r.WithContext(context.WithValue(ctx, replayErrKey{}, err)))
	return rec.body.Bytes(), true
}

// sendMessage calls the protocol handler as the SDK's transport does,
// turning a panic into the error its panic handler gives.
func (h *RPCHandler) sendMessage(ctx context.Context, req *a2a.SendMessageRequest) (res a2a.SendMessageResult, err error) {
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, h.panicked(r)
		}
	}()
	return h.ih.SendMessage(ctx, req)
}

type replayErrKey struct{}

// replayHandler answers SendMessage with the error a shortcut stored in
// the context; it serves nothing else.
type replayHandler struct{ a2asrv.RequestHandler }

func (replayHandler) SendMessage(ctx context.Context, _ *a2a.SendMessageRequest) (a2a.SendMessageResult, error) {
	err, _ := ctx.Value(replayErrKey{}).(error)
	if err == nil {
		err = a2a.ErrInternalError
	}
	return nil, err
}

// errorRecorder keeps what the replay writes.
type errorRecorder struct {
	header http.Header
	body   bytes.Buffer
}

func (r *errorRecorder) Header() http.Header         { return r.header }
func (r *errorRecorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *errorRecorder) WriteHeader(int)             {}

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
