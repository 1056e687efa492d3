package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/modelfleet/modelfleet/hub"
	"github.com/modelfleet/modelfleet/hub/store"
)

// Client calls the hub API. The zero value is not usable: set BaseURL.
type Client struct {
	// BaseURL is the hub's address, e.g. http://127.0.0.1:8400.
	BaseURL string
	// Token is sent as a bearer token when not empty.
	Token string
	// HTTP is the client to use; nil means http.DefaultClient.
	HTTP *http.Client
}

// Error is an error answer of the hub.
type Error struct {
	// StatusCode is the HTTP status, e.g. 404.
	StatusCode int
	// Message is the hub's error message.
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("hub: %s (HTTP %d)", e.Message, e.StatusCode)
}

// IsStatus reports whether err is an *Error with the given HTTP status.
func IsStatus(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == code
}

// Devices lists the devices matching selector ("k=v,k2=v2"; empty: all).
func (c *Client) Devices(ctx context.Context, selector string) ([]store.Device, error) {
	var out []store.Device
	return out, c.do(ctx, http.MethodGet, "/api/v1/devices"+query("selector", selector), nil, "", &out)
}

// Device returns one device with its recent events and last telemetry.
func (c *Client) Device(ctx context.Context, id string) (*DeviceDetail, error) {
	var out DeviceDetail
	return &out, c.do(ctx, http.MethodGet, "/api/v1/devices/"+url.PathEscape(id), nil, "", &out)
}

// SetLabels sets and removes hub labels of a device and returns it.
func (c *Client) SetLabels(ctx context.Context, id string, req LabelsRequest) (*store.Device, error) {
	var out store.Device
	return &out, c.doJSON(ctx, http.MethodPut, "/api/v1/devices/"+url.PathEscape(id)+"/labels", req, &out)
}

// Models lists the releases of a model, of all models when name is empty.
func (c *Client) Models(ctx context.Context, name string) ([]ModelInfo, error) {
	var out []ModelInfo
	return out, c.do(ctx, http.MethodGet, "/api/v1/models"+query("name", name), nil, "", &out)
}

// Model returns one release.
func (c *Client) Model(ctx context.Context, name, version string) (*ModelInfo, error) {
	var out ModelInfo
	return &out, c.do(ctx, http.MethodGet, releasePath(name, version), nil, "", &out)
}

// Manifest returns the manifest envelope of a release as the hub stores it
// (unsigned for a release pushed with SignLater): the document to sign
// offline.
func (c *Client) Manifest(ctx context.Context, name, version string) ([]byte, error) {
	var out json.RawMessage
	if err := c.do(ctx, http.MethodGet, releasePath(name, version)+"/manifest", nil, "", &out); err != nil {
		return nil, err
	}
	return out, nil
}

// AttachSignature hands the hub the offline-signed manifest envelope of an
// unsigned release. The hub checks it against its trust root's release
// role and against the registered manifest before storing it, and answers
// the release, now signed.
func (c *Client) AttachSignature(ctx context.Context, name, version string, envelope []byte) (*ModelInfo, error) {
	var out ModelInfo
	return &out, c.do(ctx, http.MethodPut, releasePath(name, version)+"/manifest", bytes.NewReader(envelope), "application/json", &out)
}

func releasePath(name, version string) string {
	return "/api/v1/models/" + url.PathEscape(name) + "/" + url.PathEscape(version)
}

// PushFile is one model file of a push.
type PushFile struct {
	// Variant is the hardware class, e.g. "cpu" or "cuda".
	Variant string
	// Path is the local ONNX file.
	Path string
}

// PushModelRequest describes a model push.
type PushModelRequest struct {
	Name, Version string
	Files         []PushFile
	// SignLater registers the release unsigned for offline signing.
	SignLater bool
	// Force overwrites objects an earlier, failed push left at the
	// release's object keys (never a registered release).
	Force bool
	// Progress, when set, is called as the request body is sent with the
	// bytes sent so far.
	Progress func(sent int64)
}

// PushModel uploads the files to the hub, which stores them in S3, signs
// the manifest and registers the release. The body is streamed, not held in
// memory.
func (c *Client) PushModel(ctx context.Context, req PushModelRequest) (*ModelInfo, error) {
	for _, f := range req.Files {
		if _, err := os.Stat(f.Path); err != nil {
			return nil, fmt.Errorf("model file for variant %s: %w", f.Variant, err)
		}
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		pw.CloseWithError(writePushForm(mw, req))
	}()
	var body io.Reader = pr
	if req.Progress != nil {
		body = &countingReader{r: pr, fn: req.Progress}
	}
	var out ModelInfo
	err := c.do(ctx, http.MethodPost, "/api/v1/models", body, mw.FormDataContentType(), &out)
	pr.Close()
	if err != nil {
		return nil, err
	}
	return &out, nil
}

func writePushForm(mw *multipart.Writer, req PushModelRequest) error {
	fields := [][2]string{{FormName, req.Name}, {FormVersion, req.Version}, {FormSignLater, strconv.FormatBool(req.SignLater)},
		{FormForce, strconv.FormatBool(req.Force)}}
	for _, f := range fields {
		if err := mw.WriteField(f[0], f[1]); err != nil {
			return err
		}
	}
	for _, f := range req.Files {
		part, err := mw.CreateFormFile(FormArtifactPrefix+f.Variant, f.Variant+".onnx")
		if err != nil {
			return err
		}
		file, err := os.Open(f.Path)
		if err != nil {
			return err
		}
		_, err = io.Copy(part, file)
		file.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", f.Path, err)
		}
	}
	return mw.Close()
}

type countingReader struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n > 0 {
		c.fn(c.n)
	}
	return n, err
}

// StartRollout starts a rollout and returns it.
func (c *Client) StartRollout(ctx context.Context, req RolloutRequest) (*hub.RolloutInfo, error) {
	var out hub.RolloutInfo
	return &out, c.doJSON(ctx, http.MethodPost, "/api/v1/rollouts", req, &out)
}

// Rollouts lists rollouts with one of the statuses (all when none given),
// newest first.
func (c *Client) Rollouts(ctx context.Context, statuses ...store.RolloutStatus) ([]hub.RolloutInfo, error) {
	ss := make([]string, len(statuses))
	for i, s := range statuses {
		ss[i] = string(s)
	}
	var out []hub.RolloutInfo
	return out, c.do(ctx, http.MethodGet, "/api/v1/rollouts"+query("status", strings.Join(ss, ",")), nil, "", &out)
}

// Rollout returns one rollout with its controller state.
func (c *Client) Rollout(ctx context.Context, id int64) (*hub.RolloutInfo, error) {
	var out hub.RolloutInfo
	return &out, c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/rollouts/%d", id), nil, "", &out)
}

// RolloutCommand applies pause, resume, abort or rollback (the Command*
// constants) and returns the rollout afterwards.
func (c *Client) RolloutCommand(ctx context.Context, id int64, command string) (*hub.RolloutInfo, error) {
	var out hub.RolloutInfo
	return &out, c.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/rollouts/%d/%s", id, url.PathEscape(command)), nil, "", &out)
}

func query(key, value string) string {
	if value == "" {
		return ""
	}
	return "?" + url.Values{key: {value}}.Encode()
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.do(ctx, method, path, bytes.NewReader(b), "application/json", out)
}

// do sends one request and decodes a 2xx JSON answer into out, or returns
// an *Error.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	if c.BaseURL == "" {
		return errors.New("no hub URL: pass --hub or set MODELFLEET_HUB")
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("hub URL %q: %w", c.BaseURL, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("reach the hub at %s (is `fleethub serve` running there?): %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read the hub's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var eb ErrorBody
		if json.Unmarshal(raw, &eb) != nil || eb.Error == "" {
			eb.Error = strings.TrimSpace(string(raw))
			if eb.Error == "" {
				eb.Error = http.StatusText(resp.StatusCode)
			}
		}
		return &Error{StatusCode: resp.StatusCode, Message: eb.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode the hub's answer to %s %s: %w", method, path, err)
	}
	return nil
}
