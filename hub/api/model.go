package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/hub/release"
	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/manifest"
)

// Multipart form fields of POST /api/v1/models.
const (
	// FormName and FormVersion name the release.
	FormName    = "name"
	FormVersion = "version"
	// FormSignLater ("true") registers the release unsigned.
	FormSignLater = "sign_later"
	// FormForce ("true") overwrites objects a failed push left at the
	// release's keys (release.PushRequest.Force).
	FormForce = "force"
	// FormArtifactPrefix starts the field name of each file part:
	// "artifact_cpu" carries the cpu variant.
	FormArtifactPrefix = "artifact_"
)

// ModelInfo is a registered release as the API returns it.
type ModelInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Signed is false for a release pushed with sign_later and not signed
	// yet; rollouts refuse it.
	Signed    bool                `json:"signed"`
	Created   time.Time           `json:"created"`
	Artifacts []manifest.Artifact `json:"artifacts"`
	// Manifest is the manifest envelope (signed or not), as agents get it.
	Manifest json.RawMessage `json:"manifest"`
}

func modelInfo(r store.Release) ModelInfo {
	info := ModelInfo{Name: r.Name, Version: r.Version, Signed: r.Signed, Created: r.Created, Artifacts: r.Artifacts}
	if json.Valid(r.Manifest) {
		info.Manifest = r.Manifest
	}
	return info
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.st.ListReleases(r.Context(), r.URL.Query().Get("name"))
	if err != nil {
		return err
	}
	out := make([]ModelInfo, 0, len(rs))
	for _, rel := range rs {
		out = append(out, modelInfo(rel))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request) error {
	rel, err := s.st.GetRelease(r.Context(), r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, modelInfo(rel))
	return nil
}

// pushModel streams the multipart upload to temporary files, then runs the
// push function on them; the files are removed afterwards either way.
func (s *Server) pushModel(w http.ResponseWriter, r *http.Request) error {
	if s.opts.Push == nil {
		return &statusError{http.StatusNotImplemented, "this hub has no object store configured for model pushes (set s3.endpoint and s3.bucket)"}
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxUploadBytes)
	mr, err := r.MultipartReader()
	if err != nil {
		return badRequest("want a multipart/form-data upload: %v", err)
	}
	dir, err := os.MkdirTemp(s.opts.TempDir, "fleethub-push-")
	if err != nil {
		return fmt.Errorf("temporary directory for the upload: %w", err)
	}
	defer os.RemoveAll(dir)

	req := release.PushRequest{Logger: s.log}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return badRequest("read upload: %v", err)
		}
		field := part.FormName()
		switch {
		case field == FormName, field == FormVersion, field == FormSignLater, field == FormForce:
			b, err := io.ReadAll(io.LimitReader(part, 1024))
			if err != nil {
				return badRequest("read field %s: %v", field, err)
			}
			v := strings.TrimSpace(string(b))
			switch field {
			case FormName:
				req.Name = v
			case FormVersion:
				req.Version = v
			case FormSignLater:
				if req.SignLater, err = strconv.ParseBool(v); err != nil {
					return badRequest("field %s: %q is not true or false", field, v)
				}
			case FormForce:
				if req.Force, err = strconv.ParseBool(v); err != nil {
					return badRequest("field %s: %q is not true or false", field, v)
				}
			}
		case strings.HasPrefix(field, FormArtifactPrefix):
			variant := strings.TrimPrefix(field, FormArtifactPrefix)
			if !validVariant(variant) {
				return badRequest("file field %s: variant %q: want 1-32 of [a-z0-9_-]", field, variant)
			}
			path := filepath.Join(dir, variant+".onnx")
			if err := saveFile(path, part); err != nil {
				return err
			}
			req.Artifacts = append(req.Artifacts, release.ArtifactFile{Variant: variant, Path: path})
		default:
			return badRequest("unknown form field %q", field)
		}
		part.Close()
	}
	if req.Name == "" || req.Version == "" {
		return badRequest("fields %s and %s are required", FormName, FormVersion)
	}
	if len(req.Artifacts) == 0 {
		return badRequest("no model file: send at least one %s<variant> file field", FormArtifactPrefix)
	}
	res, err := s.opts.Push(r.Context(), req)
	if err != nil {
		return err
	}
	rel, err := s.st.GetRelease(r.Context(), req.Name, req.Version)
	if err != nil {
		// Registered, but not readable back: still report what was pushed.
		rel = store.Release{Name: req.Name, Version: req.Version, Signed: res.Signed, Manifest: res.Envelope, Created: res.Manifest.Created, Artifacts: res.Manifest.Artifacts}
	}
	s.log.Info("model pushed", "model", req.Name, "version", req.Version, "signed", res.Signed)
	writeJSON(w, http.StatusCreated, modelInfo(rel))
	return nil
}

func saveFile(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return badRequest("the same variant was sent twice")
		}
		return fmt.Errorf("store upload: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("upload larger than the hub's limit of %d bytes: %w", mbe.Limit, err)
		}
		return badRequest("read upload: %v", err)
	}
	return f.Close()
}

// validVariant mirrors the manifest's rule for variant names; checked here
// too because the variant becomes a file name.
func validVariant(v string) bool {
	if len(v) == 0 || len(v) > 32 {
		return false
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// getManifest answers the release's manifest envelope as stored (signed or
// not), byte for byte: the document `fleethub manifest sign` signs offline.
func (s *Server) getManifest(w http.ResponseWriter, r *http.Request) error {
	rel, err := s.st.GetRelease(r.Context(), r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(append(rel.Manifest, '\n'))
	return err
}

// attachSignature takes the manifest envelope of an unsigned release,
// signed offline, checks it against the hub's trust root and the
// registered manifest (release.Attach) and stores it.
func (s *Server) attachSignature(w http.ResponseWriter, r *http.Request) error {
	name, version := r.PathValue("name"), r.PathValue("version")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, manifest.DefaultMaxDocumentBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("signed manifest larger than the %d-byte document limit: %w", mbe.Limit, err)
		}
		return badRequest("read the signed manifest: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("empty body: send the signed manifest envelope (fleethub manifest sign writes it)")
	}
	root, err := s.hub.TrustRoot()
	if err != nil {
		return err
	}
	if _, err := release.Attach(r.Context(), s.st, root, name, version, body); err != nil {
		return err
	}
	rel, err := s.st.GetRelease(r.Context(), name, version)
	if err != nil {
		return err
	}
	s.log.Info("release signature attached", "model", name, "version", version)
	writeJSON(w, http.StatusOK, modelInfo(rel))
	return nil
}
