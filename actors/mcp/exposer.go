package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/fangd/fangd/actors/approval"
	"github.com/fangd/fangd/actors/audit"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/store/safepath"
)

// Headers transport/http sets on every POST /mcp after authenticating it.
// It deletes whatever a client sent under these names first, so the
// exposer can trust them.
const (
	HeaderAgentID  = "X-Fangd-Agent-Id"
	HeaderActor    = "X-Fangd-Internal-Actor"
	HeaderSourceIP = "X-Fangd-Internal-Source-Ip"
)

// JSON-RPC error codes of the exposer beyond the standard ones.
const (
	// CodeIdentity is LibreFang's code for an agent identity problem.
	CodeIdentity = -32001
	// CodeToolDenied: the tool exists but may not be called now.
	CodeToolDenied = -32003
)

// MaxFileRead caps what file_read returns.
const MaxFileRead = 1 << 20

// ExposerOptions configure fangd's own MCP server.
type ExposerOptions struct {
	// Workspace confines file_read and file_list; empty leaves them out.
	Workspace string
	Audit     *audit.Log
	Manager   *Manager
	// Agents restricts tools per X-Fangd-Agent-Id; nil refuses the header.
	Agents AgentDirectory
	// Messenger backs agent_send; nil leaves the tool out.
	Messenger AgentMessenger
	// Channels backs channel_send; nil leaves the tool out.
	Channels ChannelSender
	// Events backs comms_events; nil leaves the tool out.
	Events EventLog
	// Approvals applies the approval policy to tools/call as to an
	// agent's calls; nil runs every call at once (tests of other parts).
	Approvals *approval.Approvals
	Version   string
	Log       zerolog.Logger
}

// Exposer is fangd as an MCP server: built-in tools plus every connected
// server's tools, proxied. Mount Server with the SDK's HTTP handlers.
type Exposer struct {
	Server *sdk.Server
	// Audits hands the tool_invoked entry of a POST /mcp tools/call to the
	// HTTP layer, which commits it with the request's own entry (see
	// CallAudits).
	Audits CallAudits
	opts   ExposerOptions
	// impl is the server's identity, which results name in _meta.
	impl *sdk.Implementation

	mu       sync.Mutex
	proxied  map[string]ToolInfo // registered proxied tools
	builtins map[string]bool     // name -> read-only
	stop     chan struct{}
	done     chan struct{}
}

// NewExposer builds the server and starts following the proxied tool set.
func NewExposer(opts ExposerOptions) *Exposer {
	x := &Exposer{opts: opts, proxied: map[string]ToolInfo{}, builtins: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}
	x.impl = &sdk.Implementation{Name: "fangd", Version: opts.Version}
	x.Server = sdk.NewServer(x.impl, &sdk.ServerOptions{
		Instructions: "fangd: the LibreFang communication daemon. Tools named mcp_<server>_<tool> are proxied to that MCP server.",
		Capabilities: &sdk.ServerCapabilities{Tools: &sdk.ToolCapabilities{ListChanged: true}},
	})
	x.addBuiltins()
	x.Server.AddReceivingMiddleware(x.middleware)
	var changed <-chan struct{}
	if opts.Manager != nil {
		changed = opts.Manager.ToolsChanged()
	}
	go x.follow(changed)
	return x
}

// Close stops following the proxied tool set.
func (x *Exposer) Close() {
	select {
	case <-x.stop:
	default:
		close(x.stop)
	}
	<-x.done
}

// BuiltinNames lists the built-in tools this exposer offers.
func (x *Exposer) BuiltinNames() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]string, 0, len(x.builtins))
	for n := range x.builtins {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// BuiltinReadOnly reports whether name is a built-in tool and whether it
// only reads.
func (x *Exposer) BuiltinReadOnly(name string) (readOnly, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	readOnly, ok = x.builtins[name]
	return readOnly, ok
}

type fileArgs struct {
	Path string `json:"path" jsonschema:"path relative to the workspace directory"`
}

type listArgs struct {
	Path string `json:"path,omitempty" jsonschema:"directory relative to the workspace; the workspace itself when empty"`
}

type limitArgs struct {
	Limit int `json:"limit,omitempty" jsonschema:"how many entries, newest first (default 20, at most 200)"`
}

type channelSendArgs struct {
	Channel string `json:"channel" jsonschema:"the configured channel's name"`
	ChatID  string `json:"chat_id" jsonschema:"the chat, room or user id on that platform"`
	Message string `json:"message" jsonschema:"the message text"`
}

type agentSendArgs struct {
	AgentID string `json:"agent_id" jsonschema:"the agent's id or name"`
	Message string `json:"message" jsonschema:"the message text"`
}

func text(s string) *sdk.CallToolResult {
	return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: s}}}
}

func jsonText(v any) (*sdk.CallToolResult, error) {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return text(string(raw)), nil
}

func clampLimit(n int) int {
	switch {
	case n <= 0:
		return 20
	case n > 200:
		return 200
	}
	return n
}

func (x *Exposer) addBuiltins() {
	// The read-only ones say so (readOnlyHint), for clients and for the
	// approval policy, which lets them run at once.
	add := func(name string, readOnly bool) { x.builtins[name] = readOnly }
	ro := &sdk.ToolAnnotations{ReadOnlyHint: true}
	if x.opts.Workspace != "" {
		add("file_read", true)
		sdk.AddTool(x.Server, &sdk.Tool{Name: "file_read", Description: "Read a text file's contents from fangd's workspace directory (at most 1 MiB).", Annotations: ro},
			func(ctx context.Context, req *sdk.CallToolRequest, in fileArgs) (*sdk.CallToolResult, any, error) {
				p, err := safepath.Resolve(x.opts.Workspace, in.Path)
				if err != nil {
					return nil, nil, fmt.Errorf("path %q: %w", in.Path, err)
				}
				f, err := os.Open(p)
				if err != nil {
					return nil, nil, fmt.Errorf("path %q: %w", in.Path, errors.Unwrap(err))
				}
				defer f.Close()
				raw, err := io.ReadAll(io.LimitReader(f, MaxFileRead+1))
				if err != nil {
					return nil, nil, fmt.Errorf("path %q: %w", in.Path, err)
				}
				if len(raw) > MaxFileRead {
					return nil, nil, fmt.Errorf("path %q is larger than %d bytes", in.Path, MaxFileRead)
				}
				if !utf8.Valid(raw) || bytes.IndexByte(raw, 0) >= 0 {
					return nil, nil, fmt.Errorf("path %q is not a text file", in.Path)
				}
				return text(string(raw)), nil, nil
			})
		add("file_list", true)
		sdk.AddTool(x.Server, &sdk.Tool{Name: "file_list", Description: "List a directory of fangd's workspace: name, type and size of each entry.", Annotations: ro},
			func(ctx context.Context, req *sdk.CallToolRequest, in listArgs) (*sdk.CallToolResult, any, error) {
				rel := in.Path
				if rel == "" {
					rel = "."
				}
				p, err := safepath.Resolve(x.opts.Workspace, rel)
				if err != nil {
					return nil, nil, fmt.Errorf("path %q: %w", in.Path, err)
				}
				entries, err := os.ReadDir(p)
				if err != nil {
					return nil, nil, fmt.Errorf("path %q: %w", in.Path, errors.Unwrap(err))
				}
				type entry struct {
					Name string `json:"name"`
					Type string `json:"type"`
					Size int64  `json:"size"`
				}
				out := []entry{}
				for _, e := range entries {
					en := entry{Name: e.Name(), Type: "file"}
					switch {
					case e.IsDir():
						en.Type = "directory"
					case e.Type()&os.ModeSymlink != 0:
						en.Type = "symlink"
					}
					if info, err := e.Info(); err == nil && !e.IsDir() {
						en.Size = info.Size()
					}
					out = append(out, en)
				}
				res, err := jsonText(map[string]any{"path": rel, "entries": out})
				return res, nil, err
			})
	}
	if x.opts.Audit != nil {
		add("audit_recent", true)
		sdk.AddTool(x.Server, &sdk.Tool{Name: "audit_recent", Description: "Recent entries of fangd's tamper-evident audit log, newest first.", Annotations: ro},
			func(ctx context.Context, req *sdk.CallToolRequest, in limitArgs) (*sdk.CallToolResult, any, error) {
				rec, err := x.opts.Audit.Recent(ctx, clampLimit(in.Limit))
				if err != nil {
					return nil, nil, err
				}
				entries := make([]json.RawMessage, len(rec.Entries))
				for i, e := range rec.Entries {
					entries[i] = e
				}
				res, err := jsonText(map[string]any{"entries": entries, "total": rec.Total})
				return res, nil, err
			})
	}
	if x.opts.Messenger != nil {
		add("agent_send", false)
		sdk.AddTool(x.Server, &sdk.Tool{Name: "agent_send", Description: "Send a message to a fangd agent and return its reply."},
			func(ctx context.Context, req *sdk.CallToolRequest, in agentSendArgs) (*sdk.CallToolResult, any, error) {
				if in.AgentID == "" || in.Message == "" {
					return nil, nil, errors.New("agent_id and message are required")
				}
				reply, err := x.opts.Messenger.SendToAgent(ctx, sender(req), in.AgentID, in.Message)
				if err != nil {
					return nil, nil, err
				}
				return text(reply), nil, nil
			})
	}
	if x.opts.Channels != nil {
		add("channel_send", false)
		sdk.AddTool(x.Server, &sdk.Tool{Name: "channel_send", Description: "Send a message to a chat through one of fangd's chat channels (Telegram, Slack, Matrix, ...)."},
			func(ctx context.Context, req *sdk.CallToolRequest, in channelSendArgs) (*sdk.CallToolResult, any, error) {
				if in.Channel == "" || in.ChatID == "" || in.Message == "" {
					return nil, nil, errors.New("channel, chat_id and message are required")
				}
				status, err := x.opts.Channels.SendToChannel(ctx, sender(req), in.Channel, in.ChatID, in.Message)
				if err != nil {
					return nil, nil, err
				}
				return text(status), nil, nil
			})
	}
	if x.opts.Events != nil {
		add("comms_events", true)
		sdk.AddTool(x.Server, &sdk.Tool{Name: "comms_events", Description: "Recent communication events (messages routed between agents and channels, MCP and agent lifecycle), newest first.", Annotations: ro},
			func(ctx context.Context, req *sdk.CallToolRequest, in limitArgs) (*sdk.CallToolResult, any, error) {
				evs, err := x.opts.Events.RecentEvents(ctx, clampLimit(in.Limit))
				if err != nil {
					return nil, nil, err
				}
				res, err := jsonText(map[string]any{"events": evs})
				return res, nil, err
			})
	}
}

// follow keeps the proxied tools registered on the server in step with
// the connected servers. The SDK tells connected sessions about every
// change (notifications/tools/list_changed).
func (x *Exposer) follow(changed <-chan struct{}) {
	defer close(x.done)
	x.sync()
	for {
		select {
		case <-changed:
			x.sync()
		case <-x.stop:
			return
		}
	}
}

func (x *Exposer) sync() {
	if x.opts.Manager == nil {
		return
	}
	want := map[string]ToolInfo{}
	for _, t := range x.opts.Manager.Tools() {
		if _, builtin := x.builtins[t.Name]; !builtin {
			want[t.Name] = t
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	var gone []string
	for name, have := range x.proxied {
		if w, ok := want[name]; !ok || w.Description != have.Description || !bytes.Equal(w.InputSchema, have.InputSchema) || w.ReadOnlyHint != have.ReadOnlyHint {
			gone = append(gone, name)
			delete(x.proxied, name)
		}
	}
	if len(gone) > 0 {
		x.Server.RemoveTools(gone...)
	}
	for name, t := range want {
		if _, ok := x.proxied[name]; ok {
			continue
		}
		if err := x.addProxied(t); err != nil {
			x.opts.Log.Warn().Err(err).Str("tool", name).Msg("cannot expose a proxied tool")
			continue
		}
		x.proxied[name] = t
	}
}

func (x *Exposer) addProxied(t ToolInfo) (err error) {
	schema := map[string]any{}
	if len(t.InputSchema) > 0 {
		if err := json.Unmarshal(t.InputSchema, &schema); err != nil {
			return fmt.Errorf("input schema: %w", err)
		}
	}
	// A server's schema is its business, but the SDK (and MCP) insist on
	// an object schema at the top.
	if typ, _ := schema["type"].(string); typ != "object" {
		schema = map[string]any{"type": "object"}
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	name := t.Name
	var ann *sdk.ToolAnnotations
	if t.ReadOnlyHint {
		// Passed on as the server said it; fangd's clients judge it as
		// they judge any server's hints.
		ann = &sdk.ToolAnnotations{ReadOnlyHint: true}
	}
	x.Server.AddTool(&sdk.Tool{Name: name, Description: t.Description, InputSchema: schema, Annotations: ann},
		func(ctx context.Context, req *sdk.CallToolRequest) (*sdk.CallToolResult, error) {
			res, _, _, err := x.opts.Manager.callProxied(ctx, name, req.Params.Arguments)
			if err != nil {
				return nil, rpcError(err)
			}
			return res, nil
		})
	return nil
}

// rpcError turns a domain error into a JSON-RPC error object.
func rpcError(err error) *jsonrpc.Error {
	de := kernel.AsError(err)
	if de == nil {
		return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}
	}
	code := int64(jsonrpc.CodeInternalError)
	switch de.Kind {
	case kernel.KindNotFound, kernel.KindInvalid:
		code = jsonrpc.CodeInvalidParams
	case kernel.KindForbidden:
		code = CodeToolDenied
	}
	return &jsonrpc.Error{Code: code, Message: de.Msg}
}

// middleware applies the agent restriction to tools/list and tools/call
// and audits every call.
func (x *Exposer) middleware(next sdk.MethodHandler) sdk.MethodHandler {
	return func(ctx context.Context, method string, req sdk.Request) (sdk.Result, error) {
		if method != "tools/list" && method != "tools/call" {
			return next(ctx, method, req)
		}
		var hdr map[string][]string
		if ex := req.GetExtra(); ex != nil {
			hdr = ex.Header
		}
		get := func(k string) string {
			if v := hdr[k]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		agentID := get(HeaderAgentID)
		var allow func(string) bool
		if agentID != "" {
			if x.opts.Agents == nil {
				return nil, &jsonrpc.Error{Code: CodeIdentity, Message: HeaderAgentID + " cannot be honoured: agents are not available in this daemon"}
			}
			f, err := x.opts.Agents.ToolFilter(ctx, agentID)
			if err != nil {
				return nil, &jsonrpc.Error{Code: CodeIdentity, Message: "agent " + agentID + ": " + kernel.PublicMessage(err)}
			}
			allow = f
		}
		if method == "tools/list" {
			res, err := next(ctx, method, req)
			if err != nil || allow == nil {
				return res, err
			}
			if lr, ok := res.(*sdk.ListToolsResult); ok {
				kept := lr.Tools[:0:0]
				for _, t := range lr.Tools {
					if allow(t.Name) {
						kept = append(kept, t)
					}
				}
				out := *lr
				out.Tools = kept
				return &out, nil
			}
			return res, err
		}
		call, _ := req.(*sdk.CallToolRequest)
		var name string
		var args json.RawMessage
		if call != nil && call.Params != nil {
			name, args = call.Params.Name, call.Params.Arguments
		}
		server, tool := "fangd", name
		if x.opts.Manager != nil {
			if it, ok := x.opts.Manager.index.Load().byName[name]; ok {
				server, tool = it.Server, it.Info.OriginalName
			}
		}
		caller := Caller{Via: "mcp_http", AgentID: agentID, Actor: get(HeaderActor), SourceIP: get(HeaderSourceIP)}
		start := time.Now()
		var res sdk.Result
		var err error
		var refused string // the status of an approval that did not let the call run
		if allow != nil && !allow(name) {
			err = &jsonrpc.Error{Code: CodeToolDenied, Message: fmt.Sprintf("agent %s may not use tool %s", agentID, name)}
		} else if x.gated(name) {
			var rec *approval.Approval
			if rec, err = x.awaitApproval(ctx, call, caller, name, args); err == nil {
				if rec.Status == approval.StatusApproved {
					res, err = next(ctx, method, req)
				} else {
					res, refused = notRun(rec), rec.Status
				}
			}
		} else {
			res, err = next(ctx, method, req)
		}
		cr, _ := res.(*sdk.CallToolResult)
		outcome := callOutcome(cr, err)
		if refused != "" {
			outcome = refused
		}
		d := time.Since(start)
		if x.opts.Audit != nil && x.Audits.handOver(get(HeaderAuditToken), ToolCallEvent(caller, server, tool, args, outcome, d)) {
			// The request commits the entry with its own before it answers.
			return res, err
		}
		if aerr := AuditToolCall(ctx, x.opts.Audit, caller, server, tool, args, outcome, d); aerr != nil && err == nil {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the call could not be audited"}
		}
		return res, err
	}
}

// sender is who speaks when a tool sends a message: the agent named by
// X-Fangd-Agent-Id ("agent:<id>"), else "mcp".
func sender(req *sdk.CallToolRequest) string {
	if req.Extra != nil {
		if a := req.Extra.Header.Get(HeaderAgentID); a != "" {
			return "agent:" + a
		}
	}
	return "mcp"
}
