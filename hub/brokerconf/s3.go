package brokerconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// S3Policy is an S3 access policy document in the IAM policy language that
// AWS IAM and MinIO both read.
type S3Policy struct {
	Version   string        `json:"Version"`
	Statement []S3Statement `json:"Statement"`
}

// S3Statement is one statement of an S3Policy.
type S3Statement struct {
	Sid      string   `json:"Sid,omitempty"`
	Effect   string   `json:"Effect"`
	Action   []string `json:"Action"`
	Resource []string `json:"Resource"`
}

// AgentS3Policy returns the policy for agents' S3 credentials: read the
// artifact objects under prefix in bucket, nothing else. Agents download
// with GET (ranged for large objects) and HEAD (StatObject, to pin a
// version before parallel range requests); S3 authorises both with
// s3:GetObject. They never list, so there is no s3:ListBucket: a device
// cannot enumerate the models it was not assigned. An empty prefix means the
// whole bucket.
func AgentS3Policy(bucket, prefix string) (S3Policy, error) {
	if err := checkBucket(bucket); err != nil {
		return S3Policy{}, err
	}
	prefix = strings.Trim(prefix, "/")
	if strings.ContainsAny(prefix, "*?\n") {
		return S3Policy{}, fmt.Errorf("prefix %q: must not contain '*', '?' or newlines", prefix)
	}
	resource := "arn:aws:s3:::" + bucket + "/*"
	if prefix != "" {
		resource = "arn:aws:s3:::" + bucket + "/" + prefix + "/*"
	}
	return S3Policy{
		Version: "2012-10-17",
		Statement: []S3Statement{{
			Sid:      "ModelfleetAgentReadArtifacts",
			Effect:   "Allow",
			Action:   []string{"s3:GetObject"},
			Resource: []string{resource},
		}},
	}, nil
}

// JSON returns the policy as indented JSON, as `mc admin policy create` and
// `aws iam create-policy` read it.
func (p S3Policy) JSON() []byte {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		panic(err) // only strings and slices: cannot fail
	}
	return append(b, '\n')
}

// checkBucket applies the S3 bucket naming rules that keep a name from
// changing the meaning of an ARN: 3 to 63 lower-case letters, digits, '.'
// and '-'.
func checkBucket(bucket string) error {
	if len(bucket) < 3 || len(bucket) > 63 {
		return errors.New("bucket: a bucket name has 3 to 63 characters")
	}
	for _, r := range bucket {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return fmt.Errorf("bucket %q: only lower-case letters, digits, '.' and '-' are allowed", bucket)
		}
	}
	return nil
}
