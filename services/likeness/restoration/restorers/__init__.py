"""Face restorers behind one interface (`FaceRestorer`); heavy imports stay inside each module."""
