package http

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/valyala/fasthttp"
)

// GET /api/openapi.json is fangd's own OpenAPI 3.1 document. Its paths are
// the router's registrations (handle records each one), so the document
// cannot list a route that is not served or miss one that is; what each
// operation does comes from routeDocs, and TestOpenAPIDocumentsEveryRoute
// fails when a served route has no entry there or an entry names a route
// no code registers. The body schemas of the seed endpoints live in
// openapi_schemas.json and are checked against real answers by
// TestOpenAPISchemasMatchRealAnswers.
//
// The document is public, as LibreFang's is: it describes the code, not
// this installation's data, and tools that load it (Swagger UI,
// openapi-typescript) fetch it without credentials.

//go:embed openapi_schemas.json
var openapiSchemas []byte

// opDoc documents one operation.
type opDoc struct {
	summary string
	// req and res name the component schemas of the JSON request and
	// success bodies ("" when not described: any JSON).
	req, res string
	// status is the success status (200 when 0).
	status int
	// sse: the success answer is a text/event-stream.
	sse bool
	// raw: the answer is not JSON (Prometheus text, TOML, HTML, PNG).
	raw string
}

// registeredRoute is one call of handle, as the router got it.
type registeredRoute struct {
	method, path string
	opts         routeOpts
}

// docKey is the routeDocs key of a registered route: /api/v1 paths share
// the /api entry (api registers both).
func docKey(method, path string) string {
	if rest, ok := strings.CutPrefix(path, "/api/v1/"); ok {
		path = "/api/" + rest
	}
	return method + " " + path
}

// routeDocs is keyed "METHOD /path" with the /api form of each path.
var routeDocs = map[string]opDoc{
	"GET /api/openapi.json":  {summary: "This OpenAPI 3.1 document (public)"},
	"GET /api/health":        {summary: "Liveness: status and version only (public)", res: "Health"},
	"GET /api/health/detail": {summary: "Detailed health: actors, store size, audit chain"},
	"GET /api/ready":         {summary: "Readiness: store open, actors started, config loaded (public); 503 when not ready", res: "Ready"},
	"GET /api/security":      {summary: "Security features and whether each is active"},
	"GET /metrics":           {summary: "Prometheus metrics (keyed)", raw: "text/plain"},

	"GET /":                   {summary: "The WebChat dashboard's page (public: it holds no data; docs/dashboard.md)", raw: "text/html"},
	"GET /dashboard/{path:*}": {summary: "The dashboard's scripts and styles (public)", raw: "text/javascript"},

	"GET /api/audit/recent":  {summary: "Most recent audit entries"},
	"GET /api/audit/verify":  {summary: "Verify the audit hash chain and its anchor", res: "AuditVerify"},
	"POST /api/audit/accept": {summary: "Accept the current audit chain tip after an anchor mismatch"},
	"GET /api/audit/query":   {summary: "Filter audit entries"},
	"GET /api/audit/export":  {summary: "Export audit entries (JSON lines or CSV)", raw: "application/x-ndjson"},
	"GET /api/admin/backup":  {summary: "Online backup of the store", raw: "application/octet-stream"},
	"GET /api/logs/stream":   {summary: "Live log stream with resume (Last-Event-ID)", sse: true},
	"GET /api/logs/level":    {summary: "Current log level"},
	"PUT /api/logs/level":    {summary: "Change the log level at runtime"},

	"GET /api/agents":                      {summary: "List agents", res: "AgentList"},
	"POST /api/agents":                     {summary: "Create an agent (fangd body, LibreFang manifest_toml or template)", req: "AgentCreate", res: "Agent", status: 201},
	"GET /api/agents/{id}":                 {summary: "Get an agent by id or name", res: "Agent"},
	"PATCH /api/agents/{id}":               {summary: "Change an agent"},
	"DELETE /api/agents/{id}":              {summary: "Delete an agent"},
	"POST /api/agents/{id}/message":        {summary: "Send a message to an agent and get its reply"},
	"POST /api/agents/{id}/message/stream": {summary: "Send a message and stream the reply (Server-Sent Events)", sse: true},
	"GET /api/agents/{id}/events":          {summary: "The agent's comms events"},
	"GET /api/agents/{id}/deliveries":      {summary: "The agent's delivery receipts"},
	"GET /api/agents/{id}/channels":        {summary: "Channels bound to the agent"},
	"PUT /api/agents/{id}/channels":        {summary: "Bind channels to the agent"},
	"GET /api/agents/{id}/mcp_servers":     {summary: "MCP servers the agent may use"},
	"PUT /api/agents/{id}/mcp_servers":     {summary: "Set the MCP servers the agent may use"},
	"GET /api/templates":                   {summary: "List agent templates"},
	"GET /api/templates/{name}":            {summary: "Get an agent template"},
	"GET /api/templates/{name}/toml":       {summary: "An agent template as TOML", raw: "application/toml"},
	"GET /api/models":                      {summary: "Model catalog"},
	"GET /api/providers":                   {summary: "LLM providers and whether each is configured"},
	"GET /api/usage":                       {summary: "Token usage and cost totals for a period", res: "Usage"},
	"GET /api/usage/summary":               {summary: "Usage summary"},
	"GET /api/usage/by-model":              {summary: "Usage by model"},
	"GET /api/usage/by-model/performance":  {summary: "Latency and errors by model"},
	"GET /api/usage/daily":                 {summary: "Usage by day"},

	"GET /api/budget":                   {summary: "Global budget and spend"},
	"PUT /api/budget":                   {summary: "Set the global budget"},
	"GET /api/budget/agents":            {summary: "Per-agent budgets"},
	"GET /api/budget/agents/{id}":       {summary: "One agent's budget"},
	"PUT /api/budget/agents/{id}":       {summary: "Set one agent's budget"},
	"GET /api/budget/providers":         {summary: "Per-provider budgets"},
	"GET /api/budget/providers/{id}":    {summary: "One provider's budget"},
	"PUT /api/budget/providers/{id}":    {summary: "Set one provider's budget"},
	"DELETE /api/budget/providers/{id}": {summary: "Remove one provider's budget"},
	"GET /api/budget/users":             {summary: "Per-user budgets"},
	"GET /api/budget/users/{id}":        {summary: "One user's budget"},
	"PUT /api/budget/users/{id}":        {summary: "Set one user's budget"},
	"DELETE /api/budget/users/{id}":     {summary: "Remove one user's budget"},

	"GET /api/approvals":                            {summary: "List approval requests", res: "ApprovalList"},
	"POST /api/approvals":                           {summary: "Create an approval request", res: "Approval", status: 201},
	"GET /api/approvals/policy":                     {summary: "The approval policy"},
	"GET /api/approvals/totp/status":                {summary: "TOTP second factor status"},
	"POST /api/approvals/totp/setup":                {summary: "Start TOTP enrolment"},
	"DELETE /api/approvals/totp/setup":              {summary: "Cancel a pending TOTP enrolment"},
	"POST /api/approvals/totp/confirm":              {summary: "Confirm TOTP enrolment with a code"},
	"POST /api/approvals/totp/revoke":               {summary: "Revoke TOTP"},
	"DELETE /api/approvals/totp":                    {summary: "Revoke TOTP"},
	"GET /api/approvals/count":                      {summary: "Count of pending approvals"},
	"GET /api/approvals/audit":                      {summary: "Decided approvals"},
	"POST /api/approvals/batch":                     {summary: "Decide several approvals at once"},
	"GET /api/approvals/session/{sid}":              {summary: "Approvals of one session"},
	"POST /api/approvals/session/{sid}/approve_all": {summary: "Approve every pending approval of a session"},
	"POST /api/approvals/session/{sid}/reject_all":  {summary: "Reject every pending approval of a session"},
	"POST /api/approvals/{id}/modify":               {summary: "Change a pending approval's payload"},
	"GET /api/approvals/{id}":                       {summary: "Get an approval (id or unique prefix)", res: "Approval"},
	"POST /api/approvals/{id}/approve":              {summary: "Approve (TOTP code when required)"},
	"POST /api/approvals/{id}/reject":               {summary: "Reject"},

	"GET /.well-known/agent.json":                      {summary: "A2A agent card (seed shape, public)"},
	"GET /.well-known/agent-card.json":                 {summary: "A2A agent card (public)"},
	"GET /a2a/.well-known/agent.json":                  {summary: "A2A agent card (seed shape, public)"},
	"GET /a2a/.well-known/agent-card.json":             {summary: "A2A agent card (public)"},
	"GET /a2a/agents":                                  {summary: "Cards of the local agents (public)"},
	"GET /a2a/agents/{id}/.well-known/agent-card.json": {summary: "One local agent's card (public)"},
	"POST /a2a":                         {summary: "A2A JSON-RPC endpoint (API key or peer token)"},
	"POST /a2a/agents/{id}":             {summary: "A2A JSON-RPC endpoint of one agent"},
	"POST /a2a/tasks/send":              {summary: "A2A REST: send a task"},
	"GET /a2a/tasks/{id}":               {summary: "A2A REST: get a task"},
	"POST /a2a/tasks/{id}/cancel":       {summary: "A2A REST: cancel a task"},
	"POST /api/a2a/discover":            {summary: "Discover an external A2A agent by URL"},
	"GET /api/a2a/agents":               {summary: "Known external A2A agents"},
	"GET /api/a2a/agents/{id}":          {summary: "One external A2A agent"},
	"DELETE /api/a2a/agents/{id}":       {summary: "Forget an external A2A agent"},
	"POST /api/a2a/agents/{id}/approve": {summary: "Approve a discovered external agent"},
	"POST /api/a2a/send":                {summary: "Send a task to an external A2A agent"},
	"GET /api/a2a/tasks/{id}/status":    {summary: "Status of an outbound A2A task"},

	"GET /api/comms/events":                  {summary: "Comms events, newest first"},
	"GET /api/comms/events/stream":           {summary: "Live comms events with resume", sse: true},
	"GET /api/comms/topology":                {summary: "Agents and the edges between them"},
	"POST /api/comms/send":                   {summary: "Send a message to an agent or a channel", req: "CommsSend", res: "CommsSendResult"},
	"POST /api/comms/task":                   {summary: "Post a task for the best-matching agent", status: 201},
	"GET /api/comms/tasks/{id}":              {summary: "Get a comms task"},
	"GET /api/peers":                         {summary: "OFP peers"},
	"GET /api/peers/{id}":                    {summary: "One OFP peer"},
	"GET /api/network/status":                {summary: "Peer network status"},
	"GET /api/cluster":                       {summary: "Cluster members, what each hosts, which entity kinds run cluster-wide or per node, and which node hosts each channel and each webhook outbox"},
	"GET /api/network/trusted-peers":         {summary: "Trusted peers"},
	"DELETE /api/network/trusted-peers/{id}": {summary: "Forget a trusted peer"},

	"POST /hooks/wake":      {summary: "Inbound trigger: wake (hook token or Standard Webhooks signature)"},
	"POST /hooks/agent":     {summary: "Inbound trigger: run an agent turn"},
	"POST /api/hooks/wake":  {summary: "Inbound trigger: wake (hook token or Standard Webhooks signature)"},
	"POST /api/hooks/agent": {summary: "Inbound trigger: run an agent turn"},

	"GET /api/webhooks/events":            {summary: "Outbound event webhooks"},
	"POST /api/webhooks/events":           {summary: "Create an outbound event webhook", status: 201},
	"PUT /api/webhooks/events/{id}":       {summary: "Change an outbound event webhook"},
	"DELETE /api/webhooks/events/{id}":    {summary: "Delete an outbound event webhook"},
	"GET /api/webhooks":                   {summary: "Outbound webhooks"},
	"POST /api/webhooks":                  {summary: "Create an outbound webhook", status: 201},
	"GET /api/webhooks/{id}":              {summary: "One outbound webhook"},
	"PUT /api/webhooks/{id}":              {summary: "Change an outbound webhook"},
	"DELETE /api/webhooks/{id}":           {summary: "Delete an outbound webhook"},
	"POST /api/webhooks/{id}/test":        {summary: "Send a test delivery"},
	"GET /api/webhooks/{id}/deliveries":   {summary: "Delivery attempts"},
	"GET /api/webhooks/{id}/dead-letters": {summary: "Deliveries that exhausted their retries"},
	"POST /api/webhooks/{id}/replay":      {summary: "Replay dead letters"},

	"GET /api/mcp/servers":                     {summary: "Configured MCP servers and their state"},
	"POST /api/mcp/servers":                    {summary: "Add an MCP server", status: 201},
	"GET /api/mcp/servers/{id}":                {summary: "One MCP server"},
	"PUT /api/mcp/servers/{id}":                {summary: "Change an MCP server"},
	"DELETE /api/mcp/servers/{id}":             {summary: "Remove an MCP server"},
	"POST /api/mcp/servers/{id}/reconnect":     {summary: "Reconnect an MCP server"},
	"POST /api/mcp/servers/{id}/tools/accept":  {summary: "Accept an MCP server's changed tool list"},
	"GET /api/mcp/catalog":                     {summary: "MCP server catalog"},
	"GET /api/mcp/catalog/{id}":                {summary: "One catalog entry"},
	"GET /api/mcp/health":                      {summary: "Health of every MCP server"},
	"POST /api/mcp/reload":                     {summary: "Reload MCP servers from the config"},
	"GET /api/mcp/servers/{id}/auth/status":    {summary: "OAuth status of an MCP server"},
	"POST /api/mcp/servers/{id}/auth/start":    {summary: "Start OAuth for an MCP server"},
	"DELETE /api/mcp/servers/{id}/auth/revoke": {summary: "Revoke an MCP server's OAuth tokens"},
	"GET /api/mcp/servers/{id}/auth/callback":  {summary: "OAuth redirect target (public)", raw: "text/html"},
	"PATCH /api/mcp/servers/{id}/taint":        {summary: "Not built: answers 501", status: 501},
	"GET /api/mcp/taint-rules":                 {summary: "Not built: answers 501", status: 501},
	"POST /mcp":                                {summary: "fangd as an MCP server (Streamable HTTP)"},
	"GET /mcp":                                 {summary: "fangd as an MCP server: server-to-client stream", sse: true},
	"DELETE /mcp":                              {summary: "End an MCP session"},

	"GET /api/channels":                           {summary: "Channels and their state"},
	"POST /api/channels/reload":                   {summary: "Reload channels from the config"},
	"GET /api/channels/registry":                  {summary: "Every channel type fangd knows"},
	"POST /api/channels/sidecar/{name}/configure": {summary: "LibreFang's sidecar form ({values}): configures the channel in process"},
	"DELETE /api/channels/sidecar/{name}":         {summary: "LibreFang's sidecar removal: stops and removes the channel"},
	"GET /api/channels/{name}/qr":                 {summary: "Pairing QR code of a channel"},
	"GET /api/channels/{name}":                    {summary: "One channel"},
	"POST /api/channels/{name}/configure":         {summary: "Configure a channel"},
	"DELETE /api/channels/{name}/configure":       {summary: "Remove a channel's configuration"},
	"POST /api/channels/{name}/test":              {summary: "Send a test message through a channel"},
	"POST /channels/{name}/webhook":               {summary: "Platform callback (signature checked, public)"},
	"GET /channels/{name}/webhook":                {summary: "Platform verification handshake (public)"},
	"POST /api/channels/whatsapp/qr/start":        {summary: "Start WhatsApp QR pairing"},
	"GET /api/channels/whatsapp/qr/status":        {summary: "WhatsApp QR pairing status"},

	"POST /api/pairing/request":                {summary: "Start device pairing"},
	"GET /api/pairing/qr":                      {summary: "Pairing QR code"},
	"POST /api/pairing/complete":               {summary: "Complete device pairing"},
	"POST /api/pairing/action":                 {summary: "A paired device decides an action"},
	"GET /api/pairing/devices":                 {summary: "Paired devices"},
	"DELETE /api/pairing/devices/{id}":         {summary: "Revoke a paired device"},
	"GET /api/pairing/devices/{id}/deliveries": {summary: "A paired device's push delivery history"},
	"GET /api/pairing/me":                      {summary: "The calling device"},
	"GET /api/pairing/vapid":                   {summary: "Web Push VAPID public key (public)"},
	"POST /api/pairing/notify":                 {summary: "Push a notification to paired devices"},

	"GET /api/auth/providers":        {summary: "Sign-in providers (public)"},
	"GET /api/auth/login":            {summary: "Start OIDC sign-in (public)"},
	"GET /api/auth/login/{provider}": {summary: "Start OIDC sign-in with a provider (public)"},
	"GET /api/auth/callback":         {summary: "OIDC redirect target (public)"},
	"POST /api/auth/callback":        {summary: "OIDC form_post target (public)"},
	"POST /api/auth/logout":          {summary: "Sign out"},
	"GET /api/auth/userinfo":         {summary: "The signed-in user (public: answers for the caller's own session)"},
	"POST /api/auth/introspect":      {summary: "Introspect a token"},
	"POST /api/auth/refresh":         {summary: "Rotate a sign-in session (public: the session token is the credential)"},
	"GET /api/auth/dashboard-check":  {summary: "LibreFang's dashboard auth mode: api_key or none (public)"},

	"POST /api/auth/dashboard-login":                {summary: "Not built (no dashboard accounts): answers 501", status: 501},
	"POST /api/auth/change-password":                {summary: "Not built (no dashboard accounts): answers 501", status: 501},
	"POST /api/auth/passkey/registration-options":   {summary: "Not built (no passkeys): answers 501", status: 501},
	"POST /api/auth/passkey/registration-verify":    {summary: "Not built (no passkeys): answers 501", status: 501},
	"POST /api/auth/passkey/authentication-options": {summary: "Not built (no passkeys): answers 501", status: 501},
	"POST /api/auth/passkey/authentication-verify":  {summary: "Not built (no passkeys): answers 501", status: 501},
	"GET /api/auth/passkey/credentials":             {summary: "Not built (no passkeys): answers 501", status: 501},
	"DELETE /api/auth/passkey/credentials/{id}":     {summary: "Not built (no passkeys): answers 501", status: 501},
}

// openAPIDocument builds the document from the registered routes.
func (s *Server) openAPIDocument() ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(openapiSchemas, &doc); err != nil {
		return nil, err
	}
	info := doc["info"].(map[string]any)
	info["version"] = s.cfg.Version
	paths := map[string]any{}
	for _, rt := range s.registered {
		p := openAPIPath(rt.path)
		item, _ := paths[p].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[p] = item
		}
		item[strings.ToLower(rt.method)] = s.openAPIOperation(rt, p)
	}
	doc["paths"] = paths
	return json.MarshalIndent(doc, "", " ")
}

// openAPIPath turns a router pattern into an OpenAPI path template
// ({name:*} catch-alls become {name}).
func openAPIPath(p string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(p, '{')
		if i < 0 {
			b.WriteString(p)
			return b.String()
		}
		j := strings.IndexByte(p[i:], '}')
		if j < 0 {
			b.WriteString(p)
			return b.String()
		}
		name, _, _ := strings.Cut(p[i+1:i+j], ":")
		b.WriteString(p[:i] + "{" + name + "}")
		p = p[i+j+1:]
	}
}

func (s *Server) openAPIOperation(rt registeredRoute, p string) map[string]any {
	d, documented := routeDocs[docKey(rt.method, rt.path)]
	if !documented {
		d.summary = "(not yet documented)"
	}
	op := map[string]any{
		"summary":     d.summary,
		"operationId": operationID(rt.method, p),
		"tags":        []string{openAPITag(p)},
	}
	var params []any
	for _, seg := range strings.Split(p, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			params = append(params, map[string]any{"name": seg[1 : len(seg)-1], "in": "path", "required": true,
				"schema": map[string]any{"type": "string"}})
		}
	}
	if params != nil {
		op["parameters"] = params
	}
	switch {
	case rt.opts.public, rt.opts.ownAuth:
		op["security"] = []any{}
	case rt.opts.peers:
		op["security"] = []any{map[string]any{"bearer": []any{}}, map[string]any{"apiKey": []any{}}, map[string]any{"peerToken": []any{}}}
	}
	if d.req != "" {
		op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
			"application/json": map[string]any{"schema": schemaRef(d.req)}}}
	} else if rt.method == "POST" || rt.method == "PUT" || rt.method == "PATCH" {
		op["requestBody"] = map[string]any{"required": false, "content": map[string]any{
			"application/json": map[string]any{"schema": map[string]any{}}}}
	}
	status := d.status
	if status == 0 {
		status = fasthttp.StatusOK
	}
	var content map[string]any
	switch {
	case d.sse:
		content = map[string]any{"text/event-stream": map[string]any{"schema": map[string]any{"type": "string"}}}
	case d.raw != "":
		content = map[string]any{d.raw: map[string]any{"schema": map[string]any{"type": "string"}}}
	case d.res != "":
		content = map[string]any{"application/json": map[string]any{"schema": schemaRef(d.res)}}
	default:
		content = map[string]any{"application/json": map[string]any{"schema": map[string]any{}}}
	}
	responses := map[string]any{"default": map[string]any{"$ref": "#/components/responses/Error"}}
	if status < 400 {
		responses[strconv.Itoa(status)] = map[string]any{"description": fasthttp.StatusMessage(status), "content": content}
	}
	op["responses"] = responses
	return op
}

func schemaRef(name string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

// operationIDChars maps a path template's characters to an operation
// id's; built once (a Replacer's first Replace builds its table).
var operationIDChars = strings.NewReplacer("/", "_", "{", "", "}", "", ".", "_", "-", "_")

// operationID is unique per method and path: get_api_v1_agents_id.
func operationID(method, p string) string {
	return strings.ToLower(method) + operationIDChars.Replace(p)
}

// openAPITag groups by the first path segment after /api[/v1].
func openAPITag(p string) string {
	if p == "/" {
		return "dashboard"
	}
	p = strings.TrimPrefix(p, "/api")
	p = strings.TrimPrefix(p, "/v1")
	seg := strings.Split(strings.TrimPrefix(p, "/"), "/")[0]
	if seg == "" || strings.HasPrefix(seg, ".") {
		return "a2a"
	}
	return strings.TrimSuffix(seg, ".json")
}

// openAPIDoc is the document, built once from the routes registered by
// New. It is built on the first request rather than in New: it is the
// same document either way (routes are only registered in New), and
// building it (a few hundred operations into maps, then indented JSON)
// was a third of the daemon's start-up CPU and kept ~0.6 MiB of heap for
// a route most daemons never serve.
type openAPIDoc struct {
	once sync.Once
	body []byte
	err  error
}

func (d *openAPIDoc) get(build func() ([]byte, error)) ([]byte, error) {
	d.once.Do(func() { d.body, d.err = build() })
	return d.body, d.err
}

// openapi serves the document.
func (s *Server) openapi(ctx *fasthttp.RequestCtx) error {
	doc, err := s.openapiDoc.get(s.openAPIDocument)
	if err != nil {
		return fmt.Errorf("build the OpenAPI document: %w", err)
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBody(doc)
	return nil
}
