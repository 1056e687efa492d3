package brokerconf_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/modelfleet/modelfleet/agent/fetch"
	"github.com/modelfleet/modelfleet/hub/brokerconf"
	"github.com/modelfleet/modelfleet/internal/testenv"
)

// TestAgentS3PolicyOnMinIO checks the generated policy with MinIO's own
// policy engine. The module has no MinIO admin client (madmin-go), so the
// test does not create a user; it asks MinIO's STS AssumeRole API, with the
// root credentials, for temporary credentials restricted by the policy as a
// session policy. MinIO then evaluates exactly this document on every
// request, as it would for a user the policy is attached to (and an owner's
// session with a session policy is not treated as the owner).
func TestAgentS3PolicyOnMinIO(t *testing.T) {
	t.Parallel()
	s := testenv.MinIO(t)
	ctx := context.Background()
	root := s.Client

	artifact := make([]byte, 3<<20)
	if _, err := rand.Read(artifact); err != nil {
		t.Fatal(err)
	}
	const object = "fleet/detector/1.0.0/cpu.onnx"
	put := func(bucket, name string, data []byte) {
		t.Helper()
		if _, err := root.PutObject(ctx, bucket, name, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatalf("put %s/%s: %v", bucket, name, err)
		}
	}
	put(s.Bucket, object, artifact)
	put(s.Bucket, "private/notes.txt", []byte("outside the artifact prefix"))
	other := s.Bucket + "-other"
	if err := root.MakeBucket(ctx, other, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		t.Fatal(err)
	}
	put(other, object, []byte("another bucket"))

	policy, err := brokerconf.AgentS3Policy(s.Bucket, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	sts, err := credentials.NewSTSAssumeRole(s.URL, credentials.STSAssumeRoleOptions{
		AccessKey: s.AccessKey, SecretKey: s.SecretKey, Policy: string(policy.JSON()), Location: s.Region,
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := sts.GetWithContext(nil)
	if err != nil {
		t.Fatalf("STS AssumeRole with the agent policy: %v", err)
	}
	// The agent's own S3 client, as agent.yaml would configure it.
	agentS3, err := fetch.NewClient(fetch.ClientOptions{
		Endpoint: s.URL, Region: s.Region,
		AccessKey: v.AccessKeyID, SecretKey: v.SecretAccessKey, SessionToken: v.SessionToken,
	})
	if err != nil {
		t.Fatal(err)
	}

	sum := sha256.Sum256(artifact)
	a := fetch.Artifact{Bucket: s.Bucket, Object: object, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(artifact))}
	for _, tc := range []struct {
		name string
		cfg  fetch.Config
	}{
		{"one stream", fetch.Config{Concurrency: 1}},
		// Parallel ranges start with StatObject (HEAD), also s3:GetObject.
		{"parallel ranges", fetch.Config{Concurrency: 3, ParallelMinBytes: 1 << 20, PartSizeBytes: 1 << 20}},
	} {
		t.Run("agent downloads with "+tc.name, func(t *testing.T) {
			store, err := fetch.NewStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fetch.New(agentS3, store, tc.cfg, nil).Fetch(ctx, a, nil); err != nil {
				t.Fatalf("fetch with the agent policy: %v", err)
			}
		})
	}

	denied := func(what string, err error) {
		t.Helper()
		var resp minio.ErrorResponse
		if err == nil {
			t.Errorf("%s: allowed, want AccessDenied", what)
		} else if !errors.As(err, &resp) || resp.Code != "AccessDenied" {
			t.Errorf("%s: %v, want AccessDenied", what, err)
		}
	}
	read := func(bucket, name string) error {
		o, err := agentS3.GetObject(ctx, bucket, name, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer o.Close()
		_, err = io.Copy(io.Discard, o)
		return err
	}
	_, err = agentS3.PutObject(ctx, s.Bucket, object, bytes.NewReader([]byte("evil")), 4, minio.PutObjectOptions{})
	denied("overwrite the artifact", err)
	_, err = agentS3.PutObject(ctx, s.Bucket, "fleet/new.onnx", bytes.NewReader([]byte("evil")), 4, minio.PutObjectOptions{})
	denied("upload under the prefix", err)
	denied("delete the artifact", agentS3.RemoveObject(ctx, s.Bucket, object, minio.RemoveObjectOptions{}))
	denied("read outside the prefix", read(s.Bucket, "private/notes.txt"))
	denied("read another bucket", read(other, object))
	for o := range agentS3.ListObjects(ctx, s.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		denied("list the bucket", o.Err)
		break
	}
	// Nothing changed.
	got, err := root.GetObject(ctx, s.Bucket, object, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	b, err := io.ReadAll(got)
	if err != nil || !bytes.Equal(b, artifact) {
		t.Fatalf("artifact changed (err %v)", err)
	}
}
