from bgjob.main import main

main()
