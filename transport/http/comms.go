package http

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/comms"
	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/transport/sse"
)

// commsStreamBuffer is how many events an SSE subscriber may fall behind
// before the bus cuts it.
const commsStreamBuffer = 4096

func (s *Server) commsRoutes() {
	s.api("GET", "/comms/events", s.commsEvents)
	s.api("GET", "/comms/events/stream", s.commsStream)
	s.api("GET", "/comms/topology", s.commsTopology)
	s.api("POST", "/comms/send", s.commsSend)
	s.api("POST", "/comms/task", s.commsTask)
	s.api("GET", "/comms/tasks/{id}", s.commsGetTask)
}

func (s *Server) needComms() error {
	if s.deps.Bus == nil || s.deps.Router == nil {
		return kernel.Unavailable("the comms layer is not running")
	}
	return nil
}

// typeFilter reads ?type= (a type, "prefix.*" or "*").
func typeFilter(ctx *fasthttp.RequestCtx) (string, error) {
	raw := string(ctx.QueryArgs().Peek("type"))
	if raw == "" {
		return "", nil
	}
	f, err := comms.NormalizeFilter(raw)
	if err != nil {
		return "", badRequest("unknown_event_type", err.Error())
	}
	return f, nil
}

// sinceID reads ?since_id=, falling back to Last-Event-ID (and
// ?last_event_id=) for streams.
func sinceID(ctx *fasthttp.RequestCtx, stream bool) (uint64, bool, error) {
	if raw := ctx.QueryArgs().Peek("since_id"); len(raw) > 0 {
		id, err := strconv.ParseUint(string(raw), 10, 64)
		if err != nil {
			return 0, false, badRequest("invalid_query", "since_id must be a non-negative integer")
		}
		return id, true, nil
	}
	if !stream {
		return 0, false, nil
	}
	id, ok, err := sse.LastEventID(ctx)
	if err != nil {
		return 0, false, badRequest("invalid_last_event_id", "Last-Event-ID must be a non-negative integer")
	}
	return id, ok, nil
}

// commsEvents serves GET /api/comms/events: committed events newest first,
// ?limit= (default 100, max 500), ?type=, ?since_id=.
func (s *Server) commsEvents(ctx *fasthttp.RequestCtx) error {
	if err := s.needComms(); err != nil {
		return err
	}
	limit, err := intQuery(ctx, 100, 1, 500, "limit")
	if err != nil {
		return err
	}
	typ, err := typeFilter(ctx)
	if err != nil {
		return err
	}
	since, _, err := sinceID(ctx, false)
	if err != nil {
		return err
	}
	r, err := s.deps.Bus.Query(s.reqCtx(ctx), comms.Query{Limit: limit, Type: typ, SinceID: since})
	if err != nil {
		return err
	}
	// The stored event JSON is served as is: no re-encoding per request.
	var b bytes.Buffer
	b.WriteString(`{"items":[`)
	for i, e := range r.Events {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(e.JSON)
	}
	b.WriteString(`],"total":`)
	b.WriteString(strconv.Itoa(r.Matched))
	b.WriteString(`,"offset":0,"limit":`)
	b.WriteString(strconv.Itoa(limit))
	b.WriteString(`,"latest_id":`)
	b.WriteString(strconv.FormatUint(r.Last, 10))
	b.WriteString(`,"oldest_id":`)
	b.WriteString(strconv.FormatUint(r.Oldest, 10))
	b.WriteString("}\n")
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBody(b.Bytes())
	return nil
}

// streamKey identifies the caller for the per-key stream cap.
func streamKey(ctx *fasthttp.RequestCtx) string {
	actor, _ := ctx.UserValue(userActor).(string)
	if actor == "loopback" {
		return actor + ":" + clientIP(ctx).String()
	}
	return actor
}

// commsStream serves GET /api/comms/events/stream: SSE with one event per
// bus event (id: = event id, event: = type). Last-Event-ID (or ?since_id=)
// replays what the log holds after it; a gap the log no longer covers is
// announced with an explicit "resync" event. A client that falls a full
// buffer behind is cut (after a final "resync" with reason
// "slow_consumer") and should reconnect with its Last-Event-ID.
func (s *Server) commsStream(ctx *fasthttp.RequestCtx) error {
	if err := s.needComms(); err != nil {
		return err
	}
	typ, err := typeFilter(ctx)
	if err != nil {
		return err
	}
	after, resume, err := sinceID(ctx, true)
	if err != nil {
		return err
	}
	r, err := s.deps.Bus.Subscribe(s.reqCtx(ctx), comms.Subscribe{Resume: resume, After: after, Type: typ,
		Key: streamKey(ctx), Buffer: commsStreamBuffer})
	if err != nil {
		return err
	}
	sub := r.Sub
	conn, heartbeat, closing := ctx.Conn(), s.cfg.SSEHeartbeat, s.closing
	sse.Begin(ctx)
	ctx.SetBodyStreamWriter(func(bw *bufio.Writer) {
		defer sub.Close()
		w := sse.NewWriter(bw, conn, s.cfg.StreamWriteTimeout)
		w.Retry(2 * time.Second)
		if r.Gap != nil {
			raw, _ := json.Marshal(r.Gap)
			w.Event(0, "resync", raw)
		}
		for i, e := range r.Replay {
			w.Event(e.ID, e.Type, e.JSON)
			if i%256 == 255 && w.Flush() != nil {
				return
			}
		}
		if w.Comment("live") != nil || w.Flush() != nil {
			return
		}
		sse.Follow(w, sub.Events(), heartbeat, closing, func(e *comms.Record) { w.Event(e.ID, e.Type, e.JSON) }, func() {
			if sub.Cut() {
				w.Event(0, "resync", []byte(`{"reason":"slow_consumer"}`))
				w.Flush()
			}
		})
	})
	return nil
}

func (s *Server) commsTopology(ctx *fasthttp.RequestCtx) error {
	if err := s.needComms(); err != nil {
		return err
	}
	offset, limit, err := pageParams(ctx, 500, 1000)
	if err != nil {
		return err
	}
	c, cancel := context.WithTimeout(s.reqCtxWait(ctx), kernel.DefaultAskTimeout)
	defer cancel()
	t, err := s.deps.Router.Topology(c)
	if err != nil {
		return err
	}
	// Nodes and edges are two lists, paged with the same offset and limit;
	// next_offset is set while either has more.
	total := max(len(t.Nodes), len(t.Edges))
	writeJSON(ctx, fasthttp.StatusOK, topologyPage{Nodes: page(t.Nodes, offset, limit), Edges: page(t.Edges, offset, limit),
		TotalNodes: len(t.Nodes), TotalEdges: len(t.Edges), Offset: offset, Limit: limit, Next: nextOffset(total, offset, limit)})
	return nil
}

// topologyPage is the seed's {nodes, edges} with the paging fields added.
type topologyPage struct {
	Nodes      []comms.Node `json:"nodes"`
	Edges      []comms.Edge `json:"edges"`
	TotalNodes int          `json:"total_nodes"`
	TotalEdges int          `json:"total_edges"`
	Offset     int          `json:"offset"`
	Limit      int          `json:"limit"`
	Next       *int         `json:"next_offset"`
}

// sendBody is the seed's shape ({to, content, from}); LibreFang's
// handler shape ({to_agent_id, message, from_agent_id}) is accepted too.
type sendBody struct {
	To          string `json:"to"`
	Content     string `json:"content"`
	From        string `json:"from"`
	ToAgentID   string `json:"to_agent_id"`
	FromAgentID string `json:"from_agent_id"`
	Message     string `json:"message"`
	// ThreadID is LibreFang's: it only echoes it in the answer, and so
	// does fangd.
	ThreadID *string `json:"thread_id"`
	// Attachments are LibreFang's image URLs; fangd's agents take text
	// only, so a non-empty list is refused rather than dropped.
	Attachments []json.RawMessage `json:"attachments"`
}

type sendReply struct {
	OK bool `json:"ok"`
	*comms.SendResult
	ThreadID *string `json:"thread_id,omitempty"`
}

// commsSend serves POST /api/comms/send.
func (s *Server) commsSend(ctx *fasthttp.RequestCtx) error {
	if err := s.needComms(); err != nil {
		return err
	}
	var b sendBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	if b.To == "" && b.ToAgentID != "" {
		b.To = "agent:" + b.ToAgentID
	}
	if b.From == "" && b.FromAgentID != "" {
		b.From = "agent:" + b.FromAgentID
	}
	if b.Content == "" {
		b.Content = b.Message
	}
	if len(b.Attachments) > 0 {
		return badRequest("unsupported_field", "attachments are not supported: fangd's agents take text messages only")
	}
	if b.To == "" {
		return badRequest("invalid_input", `"to" is required ("agent:<id or name>", "channel:<name>:<chat_id>" or "peer:<node>/agent:<id or name>")`)
	}
	c, cancel := context.WithTimeout(s.reqCtxWait(ctx), s.turnWait())
	defer cancel()
	res, err := s.deps.Router.Send(c, b.From, b.To, b.Content)
	if err != nil {
		return err
	}
	auditDetails(ctx, "message "+res.MessageID+" from "+b.From+" to "+res.To)
	writeJSON(ctx, fasthttp.StatusOK, sendReply{OK: true, SendResult: res, ThreadID: b.ThreadID})
	return nil
}

// turnWait bounds how long a request waits for an agent turn.
func (s *Server) turnWait() time.Duration {
	if s.cfg.TurnTimeout > 0 {
		return s.cfg.TurnTimeout + 5*time.Second
	}
	return 125 * time.Second
}

type taskBody struct {
	Title       string   `json:"title"`
	Description string   `json:"description"`
	AssignTo    string   `json:"assign_to"`
	AssignedTo  string   `json:"assigned_to"` // LibreFang's name
	Tags        []string `json:"tags"`
}

// commsTask serves POST /api/comms/task: 201 with the assigned task.
func (s *Server) commsTask(ctx *fasthttp.RequestCtx) error {
	if err := s.needComms(); err != nil {
		return err
	}
	var b taskBody
	if err := decodeJSON(ctx, &b); err != nil {
		return err
	}
	if b.AssignTo == "" {
		b.AssignTo = b.AssignedTo
	}
	c, cancel := context.WithTimeout(s.reqCtxWait(ctx), 2*kernel.DefaultAskTimeout)
	defer cancel()
	t, err := s.deps.Router.Dispatch(c, comms.DispatchTask{Title: b.Title, Description: b.Description, AssignTo: b.AssignTo, Tags: b.Tags})
	if err != nil {
		return err
	}
	auditDetails(ctx, "task "+t.ID+" assigned to agent "+t.AssignedTo)
	// LibreFang answers {ok, task_id}; the task carries task_id.
	writeJSON(ctx, fasthttp.StatusCreated, struct {
		OK bool `json:"ok"`
		*comms.Task
	}{true, t})
	return nil
}

func (s *Server) commsGetTask(ctx *fasthttp.RequestCtx) error {
	if err := s.needComms(); err != nil {
		return err
	}
	id, _ := ctx.UserValue("id").(string)
	c, cancel := context.WithTimeout(s.reqCtxWait(ctx), kernel.DefaultAskTimeout)
	defer cancel()
	t, err := s.deps.Router.Task(c, id)
	return reply(ctx, t, err)
}
