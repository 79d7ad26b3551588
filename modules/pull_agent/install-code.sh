# Install provision's code for the pull agent from an archive (base64 of a .tar.gz):
#   install-code.sh ARCHIVE PREFIX SHA256   unpack into PREFIX (the old tree kept as PREFIX.old)
#   install-code.sh --undo PREFIX           put PREFIX.old back
# The new tree is unpacked beside the old one and swapped in by renames.
set -eu
if [ "$1" = --undo ]; then
  prefix=$2
  if [ -d "$prefix.old" ]; then
    rm -rf -- "$prefix.undone"
    if [ -d "$prefix" ]; then mv -- "$prefix" "$prefix.undone"; fi
    mv -- "$prefix.old" "$prefix"
    rm -rf -- "$prefix.undone"
  else
    rm -rf -- "$prefix"
  fi
  exit 0
fi
archive=$1 prefix=$2 sum=$3
got=$(base64 -d < "$archive" | sha256sum)
if [ "${got%% *}" != "$sum" ]; then
  echo "the code archive $archive does not match its sha256; nothing installed" >&2
  exit 1
fi
rm -rf -- "$prefix.new"
mkdir -p -- "$prefix.new"
base64 -d < "$archive" | tar -xzf - -C "$prefix.new" --no-same-owner
echo "$sum" > "$prefix.new/.provision-code"
sync
rm -rf -- "$prefix.old"
if [ -d "$prefix" ]; then mv -- "$prefix" "$prefix.old"; fi
mv -- "$prefix.new" "$prefix"
rm -f -- "$archive"
sync
