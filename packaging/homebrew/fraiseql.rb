# Homebrew formula for the release binary (the static Linux build; `make static`).
# The release job fills in url and sha256 for each version.
class Fraiseql < Formula
  desc "GraphQL API, event reactions and analytics on top of PostgreSQL"
  homepage "https://fraiseql.dev"
  version "0.1.0"
  url "https://releases.fraiseql.dev/v#{version}/fraiseql-x86_64-linux"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license "MIT"

  depends_on :linux
  depends_on arch: :x86_64

  def install
    bin.install Dir["fraiseql*"].first => "fraiseql"
  end

  test do
    assert_match "fraiseql #{version}", shell_output("#{bin}/fraiseql --version")
  end
end
