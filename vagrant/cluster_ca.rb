# The cluster CA of the Vagrant cluster, made on the host before the first
# node comes up (like the cluster SSH key) and carried to the nodes by the
# synced folder: each node's provisioning issues its first libvirt
# certificates from it (provision/node_tls.py), and `gnt-lv cluster init
# --ca-cert/--ca-key` makes it the cluster CA. Ruby's own OpenSSL: nothing
# to install on the host.
require "openssl"

module ClusterCA
  VALID_SECONDS = 10 * 365 * 24 * 3600

  # Write <dir>/cacert.pem and <dir>/cakey.pem (0600) unless they exist.
  def self.ensure(dir, cluster_name)
    cert_file = File.join(dir, "cacert.pem")
    key_file = File.join(dir, "cakey.pem")
    return if File.exist?(cert_file) && File.exist?(key_file)

    key = OpenSSL::PKey::RSA.new(2048)
    name = OpenSSL::X509::Name.new([["O", cluster_name], ["CN", "#{cluster_name} cluster CA"]])
    cert = OpenSSL::X509::Certificate.new
    cert.version = 2
    cert.serial = OpenSSL::BN.rand(120)
    cert.subject = name
    cert.issuer = name
    cert.public_key = key.public_key
    cert.not_before = Time.now - 300
    cert.not_after = Time.now + VALID_SECONDS
    ext = OpenSSL::X509::ExtensionFactory.new
    ext.subject_certificate = cert
    ext.issuer_certificate = cert
    cert.add_extension(ext.create_extension("basicConstraints", "CA:TRUE,pathlen:0", true))
    cert.add_extension(ext.create_extension("keyUsage", "keyCertSign,cRLSign", true))
    cert.add_extension(ext.create_extension("subjectKeyIdentifier", "hash", false))
    cert.sign(key, OpenSSL::Digest.new("SHA256"))
    File.write(key_file, key.to_pem, perm: 0o600)
    File.write(cert_file, cert.to_pem, perm: 0o644)
  end
end
